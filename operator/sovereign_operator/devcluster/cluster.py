"""LocalCluster: a real Kubernetes control plane on 127.0.0.1, with kwok GPU nodes and KubeRay.

Nothing is mocked: etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real
binaries; kwok plays the kubelets of fake GPU nodes; the KubeRay operator is the real one.

    with LocalCluster() as cluster:
        cluster.kubectl("get", "nodes")
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
import yaml

from ..images.references import PAUSE_IMAGE
from . import s3store
from .binaries import Binaries, ensure_binaries
from .kueue import (
    KUEUE_KINDS_USED,
    KUEUE_NAMESPACE,
    in_own_etc,
    manager_config,
    webhook_configurations,
)
from .nodes import DEFAULT_NODES, FakeNode, build_node
from .pki import CertificateAuthority, CertPair, service_account_keys
from .processes import ClusterStartError, ManagedProcess, free_port, tail
from .realnode import KUBELET_CLIENT_USER, NodeComponents, RealNode, real_node_rbac
from .s3store import S3Credentials, S3StoreLayout, new_credentials, new_layout, weed_argv

log = logging.getLogger(__name__)

SERVICE_CIDR = "10.96.0.0/16"
# Where the vendored KubeRay CRDs live in a source checkout (../shared/crds beside it).
KUBERAY_CRD_FOLDER = "kuberay-v1.7.0"


def _find_kuberay_crds(operator_binary: Path) -> Path | None:
    # The build script puts the CRDs of the same KubeRay module version beside the binary.
    beside = operator_binary.parent / "crds"
    if any(beside.glob("ray.io_rayjobs.yaml")):
        return beside
    here = Path(__file__).resolve()
    for parent in here.parents:
        for candidate in (
            parent / "shared" / "crds" / KUBERAY_CRD_FOLDER,
            parent.parent / "shared" / "crds" / KUBERAY_CRD_FOLDER,
            parent / "hack" / "crds" / KUBERAY_CRD_FOLDER,
        ):
            if candidate.is_dir():
                return candidate
    return None


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call; unlike its base class, its message carries kubectl's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


class LocalCluster:
    """A local control plane; a context manager that tears everything down by PID on exit.

    ``workdir``: where certificates, data, kubeconfigs and logs go (a temp folder by default,
    removed on exit unless ``keep_workdir``). ``kuberay``: also run the KubeRay operator.
    ``apiserver_flags``: extra kube-apiserver flags, after (so overriding) the defaults.
    ``real_node``: also run a real node (kubelet, containerd, runc; needs root) that runs
    containers, with ``node_images`` (OCI archives from ``make images``) imported into it.
    ``report_stop``: hears what is being stopped, step by step, while it happens.
    ``s3``: also run an S3-compatible store (SeaweedFS) on the cluster's address, reachable
    from this machine and from the real node's pods; ``s3_credentials`` says where and how.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        kuberay: bool = True,
        nodes: Sequence[FakeNode] = DEFAULT_NODES,
        binaries: Binaries | None = None,
        keep_workdir: bool = False,
        start_timeout: float = 120.0,
        apiserver_flags: Sequence[str] = (),
        real_node: bool = False,
        node_images: Sequence[Path] = (),
        report_stop: Callable[[str], None] | None = None,
        s3: bool = False,
        kueue: bool = False,
    ) -> None:
        self._own_workdir = workdir is None
        self.report_stop = report_stop
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="sovai-cluster-"))
        self.keep_workdir = keep_workdir
        self.with_kuberay = kuberay
        self.nodes = tuple(nodes)
        self.binaries = binaries or ensure_binaries(node=real_node)
        self.real_node = (
            RealNode(self.workdir / "node", self.binaries, SERVICE_CIDR, node_images, PAUSE_IMAGE)
            if real_node
            else None
        )
        # With a real node the API server listens on the node's bridge (an interface this
        # cluster creates), so that pods reach it; otherwise on loopback only.
        self.api_host = self.real_node.layout.node_ip if self.real_node else "127.0.0.1"
        self.start_timeout = start_timeout
        # Appended last, so they override the defaults (e.g. --profiling=true for a bench).
        self.apiserver_flags = tuple(apiserver_flags)
        self.pki_dir = self.workdir / "pki"
        self.log_dir = self.workdir / "logs"
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.api_port = 0
        self.with_s3 = s3
        self.with_kueue = kueue
        self.s3_credentials: S3Credentials | None = None
        self.s3_layout: S3StoreLayout | None = None
        self._processes: list[ManagedProcess] = []
        self._stopped: list[ManagedProcess] = []
        self._ca: CertificateAuthority | None = None

    # -- public API ------------------------------------------------------------------------

    @property
    def server(self) -> str:
        return f"https://{self.api_host}:{self.api_port}"

    def component_logs(self) -> dict[str, Path]:
        return {p.name: p.log_path for p in self._processes}

    def component_pids(self) -> dict[str, int]:
        """The PID of each running component (for benchmarks that account CPU per process)."""
        return {p.name: p.pid for p in self._processes if p.pid is not None}

    def kubectl(
        self,
        *args: str,
        stdin: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the cluster's own kubectl against it; raise with stderr when ``check`` fails."""
        argv = [str(self.binaries["kubectl"]), f"--kubeconfig={kubeconfig or self.kubeconfig}"]
        result = subprocess.run(
            [*argv, *args], input=stdin, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, ["kubectl", *args], result.stdout, result.stderr)
        return result

    def apply(self, *manifests: dict[str, Any], namespace: str | None = None) -> None:
        """Server-side apply of manifests given as dicts.

        They travel as JSON, not YAML: PyYAML writes the string "3e-3" unquoted, which the API
        server's YAML 1.2 parser would read back as a number.
        """
        extra = ["-n", namespace] if namespace else []
        self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            *extra,
            "-f",
            "-",
            stdin="\n".join(json.dumps(manifest) for manifest in manifests),
        )

    def wait_for_crds(self, *names: str, timeout: float = 60.0) -> None:
        """Wait until each CRD is Established (served).

        ``kubectl wait`` errors out instead of waiting while a fresh CRD has no conditions yet,
        so this polls.
        """
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending:
            for name in sorted(pending):
                result = self.kubectl("get", "crd", name, "-o", "json", check=False)
                if result.returncode == 0 and any(
                    c["type"] == "Established" and c["status"] == "True"
                    for c in json.loads(result.stdout).get("status", {}).get("conditions") or []
                ):
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(
                    f"CRDs not Established within {timeout:.0f} s: {sorted(pending)}"
                )
            if pending:
                time.sleep(0.2)

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig for a client-certificate user with the given groups (RBAC tests)."""
        assert self._ca is not None, "cluster not started"
        pair = self._ca.issue(
            f"user-{user}", user, organization=",".join(groups) if groups else None
        )
        path = self.workdir / f"user-{user}.kubeconfig"
        self._write_kubeconfig(path, user, pair)
        return path

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start every component in order; on any failure stop what started, then raise."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.real_node is not None:
                self.real_node.create_network()
            self._make_pki()
            self._start_etcd()
            self._start_apiserver()
            self._start_controller_manager()
            self._start_scheduler()
            self._start_kwok()
            self._create_nodes()
            if self.with_s3:
                self._start_s3()
            if self.real_node is not None:
                self._start_real_node(self.real_node)
            if self.with_kuberay:
                self._start_kuberay()
            if self.with_kueue:
                self._start_kueue()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop components in reverse order of start, then remove a temporary workdir."""
        say = self.report_stop or (lambda _: None)
        if self.real_node is not None:
            self.real_node.stop(drain=self._drain_real_node, report=say)
        for process in reversed(self._processes):
            if process.running():
                say(process.name)
            process.stop()
        self._stopped.extend(self._processes)
        self._processes.clear()
        for socket in self.s3_layout.grpc_sockets() if self.s3_layout else ():
            socket.unlink(missing_ok=True)
        if self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What ``stop`` left behind (processes, and the real node's mounts, interfaces and
        firewall rules); empty when the teardown was complete."""
        found = [
            f"{process.name} (pids {members})"
            for process in (*self._stopped, *self._processes)
            if (members := process.group_members())
        ]
        if self.s3_layout is not None:
            found += [f"file {path}" for path in self.s3_layout.grpc_sockets() if path.exists()]
        if self.real_node is not None:
            found += self.real_node.leftovers()
        return found

    def restart(self, name: str) -> float:
        """Stop one component and start it again with the same flags, ports and data (a
        crash and a supervisor's restart, for chaos tests); returns the seconds until it was
        healthy again. etcd and kube-apiserver are waited for; the others only started."""
        process = next((p for p in self._processes if p.name == name), None)
        if process is None:
            known = ", ".join(p.name for p in self._processes)
            raise ValueError(f"no component {name!r} in this cluster; running: {known}")
        began = time.monotonic()
        process.stop()
        process.start()
        checks: dict[str, Callable[[], bool]] = {
            "etcd": self._etcd_healthy,
            "kube-apiserver": self._readyz,
        }
        if name in checks:
            process.wait_until(checks[name], self.start_timeout, "healthy again")
        return time.monotonic() - began

    # -- steps -----------------------------------------------------------------------------

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.log_dir, env, cwd)
        log.info("starting %s", name)
        process.start()
        self._processes.append(process)
        return process

    def _make_pki(self) -> None:
        ca = CertificateAuthority(self.pki_dir)
        self._ca = ca
        self._serving = ca.issue(
            "apiserver",
            "kube-apiserver",
            server_hosts=[
                *([self.api_host] if self.api_host != "127.0.0.1" else []),
                "127.0.0.1",
                "localhost",
                "10.96.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )
        self._sa = service_account_keys(self.pki_dir)
        # kube-apiserver's identity towards kubelets; bound to system:kubelet-api-admin below.
        self._kubelet_client = ca.issue("apiserver-kubelet-client", KUBELET_CLIENT_USER)

    def _write_kubeconfig(self, path: Path, user: str, pair: CertPair) -> None:
        assert self._ca is not None
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "sovai-local",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self._ca.pair.cert),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {"client-certificate": str(pair.cert), "client-key": str(pair.key)},
                }
            ],
            "contexts": [
                {"name": "sovai-local", "context": {"cluster": "sovai-local", "user": user}}
            ],
            "current-context": "sovai-local",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def _component_kubeconfig(
        self, component: str, common_name: str, group: str | None = None
    ) -> Path:
        assert self._ca is not None
        pair = self._ca.issue(component, common_name, organization=group)
        path = self.workdir / f"{component}.kubeconfig"
        self._write_kubeconfig(path, common_name, pair)
        return path

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        etcd = self._spawn(
            "etcd",
            [
                str(self.binaries["etcd"]),
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                # A throw-away cluster: durability is not worth the fsync latency on CI disks.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        etcd.wait_until(self._etcd_healthy, self.start_timeout, "healthy")

    def _etcd_healthy(self) -> bool:
        return bool(
            requests.get(f"{self.etcd_url}/health", timeout=2).json().get("health") == "true"
        )

    def _start_apiserver(self) -> None:
        assert self._ca is not None
        self.api_port = free_port()
        admin = self._ca.issue("admin", "sovai-admin", organization="system:masters")
        self._admin = admin
        self._write_kubeconfig(self.kubeconfig, "sovai-admin", admin)
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self.binaries["kube-apiserver"]),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={self.api_host}",
                f"--advertise-address={self.api_host}",
                f"--secure-port={self.api_port}",
                f"--tls-cert-file={self._serving.cert}",
                f"--tls-private-key-file={self._serving.key}",
                f"--client-ca-file={self._ca.pair.cert}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self._sa.cert}",
                f"--service-account-signing-key-file={self._sa.key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                # Nothing runs kubelets here; kwok fakes them.
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                # kubelet's API (logs, exec, port-forward) by the node's IP, never a name that
                # the machine's resolver would be asked for; both sides authenticate.
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-certificate-authority={self._ca.pair.cert}",
                f"--kubelet-client-certificate={self._kubelet_client.cert}",
                f"--kubelet-client-key={self._kubelet_client.key}",
                *self.apiserver_flags,
            ],
        )
        apiserver.wait_until(self._readyz, self.start_timeout, "ready (/readyz)")

    def _readyz(self) -> bool:
        assert self._ca is not None
        response = requests.get(
            f"{self.server}/readyz",
            cert=(str(self._admin.cert), str(self._admin.key)),
            verify=str(self._ca.pair.cert),
            timeout=2,
        )
        return response.status_code == 200

    def _start_controller_manager(self) -> None:
        assert self._ca is not None
        kubeconfig = self._component_kubeconfig(
            "kube-controller-manager", "system:kube-controller-manager"
        )
        kcm = self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries["kube-controller-manager"]),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                # Each controller acts as its own service account, as in a kubeadm cluster, so the
                # component's identity needs only the bootstrap RBAC role.
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self._sa.key}",
                f"--root-ca-file={self._ca.pair.cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
            ],
        )
        kcm.wait_until(
            lambda: self._exists("serviceaccount", "default", namespace="default"),
            self.start_timeout,
            "managing the cluster (default ServiceAccount created)",
        )

    def _start_scheduler(self) -> None:
        kubeconfig = self._component_kubeconfig("kube-scheduler", "system:kube-scheduler")
        scheduler = self._spawn(
            "kube-scheduler",
            [
                str(self.binaries["kube-scheduler"]),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
            ],
        )
        # The scheduler has no endpoint to poll with secure serving off; give it a moment to
        # crash on bad flags rather than reporting a later, confusing Pending pod.
        time.sleep(1.0)
        if not scheduler.running():
            raise scheduler.failure("exited right after start")

    def _start_kwok(self) -> None:
        # kwok needs Stage definitions to act as kubelets; the build script puts the ones
        # shipped in kwok's own module (node init + lease heartbeat, the pod lifecycle) beside
        # the binary.
        stages = sorted((self.binaries["kwok"].parent / "stages").glob("*.yaml"))
        if not stages:
            raise ClusterStartError(
                f"no kwok stages beside {self.binaries['kwok']}; run hack/build-control-plane.sh"
            )
        kwok = self._spawn(
            "kwok",
            [
                str(self.binaries["kwok"]),
                f"--kubeconfig={self.kubeconfig}",
                *(f"--config={stage}" for stage in stages),
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.244.0.1/16",
                "--node-ip=10.0.0.1",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{free_port()}",
            ],
        )
        time.sleep(0.5)
        if not kwok.running():
            raise kwok.failure("exited right after start")
        self._kwok = kwok

    def _create_nodes(self) -> None:
        if not self.nodes:
            return
        self.apply(*(build_node(node) for node in self.nodes))
        self._kwok.wait_until(
            self._nodes_ready, self.start_timeout, "reporting every fake node Ready"
        )

    def _nodes_ready(self, names: set[str] | None = None) -> bool:
        """Every node named (by default: every fake node) reports Ready."""
        result = self.kubectl("get", "nodes", "-o", "json", check=False)
        if result.returncode != 0:
            return False
        items = json.loads(result.stdout)["items"]
        ready = {
            item["metadata"]["name"]
            for item in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in item.get("status", {}).get("conditions", [])
            )
        }
        return ready >= (names if names is not None else {node.name for node in self.nodes})

    def _start_s3(self) -> None:
        layout = new_layout(self.workdir / "s3", self.api_host)
        self.s3_layout = layout
        credentials = new_credentials(layout.endpoint)
        config = s3store.prepare(layout.root, credentials)
        # In its folder: weed reads master.toml (s3store.prepare) from where it runs.
        weed = self._spawn(
            "seaweedfs", weed_argv(self.binaries["weed"], layout, config), cwd=layout.root
        )
        weed.wait_until(lambda: s3store.answers(layout.endpoint), self.start_timeout,
                        "answering S3 requests")  # fmt: skip
        self.s3_credentials = credentials

    def _start_kuberay(self) -> None:
        crds = _find_kuberay_crds(self.binaries["kuberay-operator"])
        if crds is None:
            raise ClusterStartError(
                f"KubeRay CRDs ({KUBERAY_CRD_FOLDER}) not found next to the checkout (shared/crds)"
            )
        self.kubectl("apply", "--server-side", "-f", str(crds), timeout=120)
        self.wait_for_crds("rayjobs.ray.io", "rayclusters.ray.io")
        probe = free_port()
        kuberay = self._spawn(
            "kuberay-operator",
            [
                str(self.binaries["kuberay-operator"]),
                f"--metrics-addr=127.0.0.1:{free_port()}",
                f"--health-probe-bind-address=127.0.0.1:{probe}",
                "--enable-leader-election=false",
                # KubeRay runs on this machine, outside the pods' network and the cluster's
                # DNS: it asks a head's dashboard for the job status through the API server's
                # service proxy, where an in-cluster KubeRay would call the head Service.
                "--use-kubernetes-proxy",
            ],
            env={"KUBECONFIG": str(self.kubeconfig)},
        )
        kuberay.wait_until(
            lambda: requests.get(f"http://127.0.0.1:{probe}/readyz", timeout=2).status_code == 200,
            self.start_timeout,
            "ready (/readyz)",
        )

    def _start_kueue(self) -> None:
        assert self._ca is not None
        binary = self.binaries["kueue"]
        self.kubectl("apply", "--server-side", "-f", str(binary.parent / "crds"), timeout=120)
        self.wait_for_crds(
            *(f"{kind}.kueue.x-k8s.io" for kind in KUEUE_KINDS_USED),
        )
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KUEUE_NAMESPACE}})
        root = self.workdir / "kueue"
        hosts = sorted({self.api_host, "127.0.0.1"})
        certs = root / "certs"
        # Kueue reads its metrics certificate from a fixed path, /etc/kueue/metrics/certs (a
        # mounted Secret in its pod). It runs in a mount namespace of its own where /etc is an
        # overlay whose upper layer, in the cluster's folder, holds that certificate: nothing
        # is written to this machine's /etc.
        etc = root / "etc"
        metrics_certs = etc / "kueue" / "metrics" / "certs"
        for folder, name in ((certs, "kueue-webhook"), (metrics_certs, "kueue-metrics")):
            folder.mkdir(parents=True, exist_ok=True)
            pair = self._ca.issue(name, name, server_hosts=hosts)
            # controller-runtime's servers read these two names from their folder.
            shutil.copy(pair.cert, folder / "tls.crt")
            shutil.copy(pair.key, folder / "tls.key")
        (root / "etc-work").mkdir(exist_ok=True)
        webhook, health = free_port(), free_port()
        config = root / "config.yaml"
        config.write_text(yaml.safe_dump(
            manager_config(self.api_host, webhook, certs, health, free_port())
        ))  # fmt: skip
        kueue = self._spawn(
            "kueue",
            [
                *in_own_etc(etc, root / "etc-work"),
                str(binary),
                f"--config={config}",
                # The on-demand visibility API is an aggregated API server: the API server
                # would reach it only through a Service, which this machine has no route to.
                "--feature-gates=VisibilityOnDemand=false",
            ],
            env={"KUBECONFIG": str(self.kubeconfig)},
        )
        kueue.wait_until(
            lambda: requests.get(f"http://{self.api_host}:{health}/readyz", timeout=2).ok,
            self.start_timeout,
            "ready (/readyz)",
        )
        ca_bundle = base64.b64encode(self._ca.pair.cert.read_bytes()).decode()
        self.apply(*webhook_configurations(
            (binary.parent / "webhooks.yaml").read_text(),
            f"https://{self.api_host}:{webhook}",
            ca_bundle,
        ))  # fmt: skip

    def _start_real_node(self, node: RealNode) -> None:
        assert self._ca is not None
        self.apply(*real_node_rbac())
        node.start(NodeComponents(self._ca, self._write_kubeconfig, self._spawn))
        deadline = time.monotonic() + self.start_timeout
        while not self._node_ready(node.name):
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"real node {node.name} not Ready within {self.start_timeout:.0f} s. "
                    f"Last lines of its kubelet log:\n{tail(self.log_dir / 'kubelet.log')}"
                )
            time.sleep(0.5)

    def _node_ready(self, name: str) -> bool:
        return self._nodes_ready({name})

    def _drain_real_node(self) -> None:
        """Delete the real node's pods, so that kubelet stops their containers and releases
        their addresses and network namespaces before it stops."""
        assert self.real_node is not None
        selector = f"spec.nodeName={self.real_node.name}"
        self.kubectl("delete", "pods", "--all-namespaces", f"--field-selector={selector}",
                     "--grace-period=0", "--force", "--wait=false", check=False)  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.real_node.ctr("tasks", "list", "--quiet", timeout=10).stdout.strip():
                return
            time.sleep(0.5)

    def _exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        extra = ["-n", namespace] if namespace else []
        return self.kubectl("get", kind, name, *extra, check=False).returncode == 0


__all__ = ["ClusterStartError", "LocalCluster", "tail"]
