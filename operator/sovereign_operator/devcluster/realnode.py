"""The local cluster's real node: kubelet on containerd and runc, with a CNI bridge of its own.

Unlike the kwok nodes, it runs containers: the product's own images (``make images``), imported
into its containerd because no registry is reachable. It joins the cluster as
``system:node:<name>`` with a certificate from the cluster CA, and serves kubelet's API only to
clients with a certificate of that CA (the API server's, for logs, exec and port-forward).

Needs root (network interfaces, mounts, cgroups), as any kubelet does.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from .binaries import Binaries
from .node_config import (
    NodeLayout,
    cni_config,
    containerd_config,
    coredns_corefile,
    kubelet_config,
    to_toml,
)
from .pki import CertificateAuthority, CertPair
from .processes import ClusterStartError, ManagedProcess, free_port, pids_where

log = logging.getLogger(__name__)

BRIDGE_RANGE = ipaddress.IPv4Network("10.213.0.0/16")
# Paths that kubelet and containerd's shims use whatever they are configured with: removed at
# stop when the node made them (deepest first), so that nothing is left behind.
HOST_PATHS = (
    Path("/var/lib/kubelet/device-plugins"),
    Path("/var/lib/kubelet"),
    Path("/run/containerd/s"),
    Path("/run/containerd"),
    Path("/var/log/containers"),
)


CGROUP_ROOT = Path("/sys/fs/cgroup")
# The file beside each image archive that records its manifest digest (images/build.py).
IMAGE_METADATA = "image.json"
# "0" keeps the node's image store out of the cache (removed at stop, as it was before).
IMAGE_CACHE_VARIABLE = "SOVAI_NODE_IMAGE_CACHE"
IPTABLES = ("iptables", "ip6tables")
TABLES = ("filter", "nat", "mangle")


def _kube_chains() -> dict[tuple[str, str], list[str]]:
    """(command, table) -> the rules (``iptables -S`` lines) that name a KUBE-* chain."""
    found: dict[tuple[str, str], list[str]] = {}
    for command in IPTABLES:
        for table in TABLES:
            result = subprocess.run([command, "-t", table, "-S"], capture_output=True, text=True,
                                    check=False)  # fmt: skip
            rules = [line for line in result.stdout.splitlines() if "KUBE-" in line]
            if rules:
                found[(command, table)] = rules
    return found


def _remove_kube_chains() -> None:
    """kubelet (and kube-proxy) create KUBE-* chains, among them a KUBE-FIREWALL rule on the
    machine's INPUT and OUTPUT; none of it may outlive the node."""
    for (command, table), rules in _kube_chains().items():
        chains = [line.split()[1] for line in rules if line.startswith("-N ")]
        for line in rules:  # jumps from the built-in chains first
            rule = shlex.split(line)  # comments are quoted
            if rule[0] == "-A" and rule[1] not in chains:
                subprocess.run([command, "-t", table, "-D", *rule[1:]], check=False,
                               capture_output=True)  # fmt: skip
        for flag in ("-F", "-X"):
            for chain in chains:
                subprocess.run([command, "-t", table, flag, chain], check=False,
                               capture_output=True)  # fmt: skip


def other_kubelets() -> list[int]:
    """PIDs of kubelets running on this machine (after a node's own kubelet has stopped: those
    of other nodes, whose chains and cgroups must stay)."""
    return pids_where(lambda proc: (proc / "comm").read_text().strip() == "kubelet")


def _remove_cgroups(name: str) -> None:
    """kubelet's cgroup tree (``kubepods`` in every v1 hierarchy), deepest first; only empty
    cgroups can be removed, so a cgroup still in use stays."""
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / name
        if hierarchy.is_symlink() or not top.is_dir():
            continue
        for cgroup in sorted(
            (p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
        ):
            with contextlib.suppress(OSError):
                cgroup.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


COREDNS_USER = "system:sovai-coredns"
# kube-apiserver's identity towards kubelets (its --kubelet-client-certificate).
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"


@dataclass(frozen=True)
class NodeComponents:
    """What the node needs from the cluster: its CA, a way to write kubeconfigs for the API
    server, and a way to start processes that the cluster stops."""

    ca: CertificateAuthority
    write_kubeconfig: Callable[[Path, str, CertPair], None]
    spawn: Callable[[str, list[str], dict[str, str] | None], ManagedProcess]


def real_node_rbac() -> list[dict[str, Any]]:
    """What the node's components need beyond the bootstrap roles: the API server calls kubelets
    (as kubeadm binds it), and CoreDNS reads Services, EndpointSlices, Pods and Namespaces."""
    api = "rbac.authorization.k8s.io"

    def binding(name: str, role: str, user: str) -> dict[str, Any]:
        return {
            "apiVersion": f"{api}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": api, "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": api, "kind": "User", "name": user}],
        }

    coredns_role: dict[str, Any] = {
        "apiVersion": f"{api}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "sovai:coredns"},
        "rules": [
            {"apiGroups": [""], "resources": ["services", "pods", "namespaces"],
             "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
             "verbs": ["list", "watch"]},
        ],
    }  # fmt: skip
    return [
        binding("sovai:apiserver-kubelet-client", "system:kubelet-api-admin", KUBELET_CLIENT_USER),
        coredns_role,
        binding("sovai:coredns", "sovai:coredns", COREDNS_USER),
    ]


def _healthy(port: int, path: str = "/healthz") -> bool:
    return requests.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200


class RealNodeError(ClusterStartError):
    """The real node could not start; the message says which step and why."""


IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def _iptables(*args: str, check: bool = True) -> None:
    result = subprocess.run(["iptables", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RealNodeError(f"iptables {' '.join(args)} failed: {result.stderr.strip()}")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RealNodeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 of BRIDGE_RANGE that no interface of this machine uses (two clusters can run)."""
    used = json.loads(_ip("-j", "-4", "addr").stdout or "[]")
    taken = {
        ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network
        for link in used
        for a in link.get("addr_info", [])
    }
    for subnet in BRIDGE_RANGE.subnets(new_prefix=24):
        if not any(subnet.overlaps(other) for other in taken):
            return subnet
    raise RealNodeError(f"no free /24 left in {BRIDGE_RANGE}")


def image_store_root() -> Path:
    """Where the real node's containerd keeps its images between runs."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sovereign-ai" / "node-store"


def manifest_digest(archive: Path) -> str | None:
    """The manifest digest `make images` recorded beside an archive, if it did."""
    try:
        digest = json.loads((archive.parent / IMAGE_METADATA).read_text())["manifest_digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return digest if isinstance(digest, str) else None


class ImageStore:
    """containerd's root for one node: the shared cache when no other node on this machine
    holds it (an exclusive lock for the node's lifetime), else a folder of the node's own.

    Importing the 7 GB runtime image into an empty store took about two minutes of every
    cluster start; in the cache, an image whose manifest digest is already there is not
    imported again, and images that no archive asks for any more are removed, so the store holds
    one version of each image."""

    def __init__(self, fallback: Path) -> None:
        self.path = fallback
        self.shared = False
        self._lock: int | None = None
        if os.environ.get(IMAGE_CACHE_VARIABLE, "1") == "0":
            return  # asked for a store of the node's own (a machine that runs once, like CI)
        cache = image_store_root()
        with contextlib.suppress(OSError):
            cache.mkdir(parents=True, exist_ok=True)
            fd = os.open(cache / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # another node uses the cache: this one keeps its own store
                return
            self._lock, self.path, self.shared = fd, cache / "containerd", True

    def release(self) -> None:
        """Remove a store of the node's own; keep (and unlock) the shared one."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        if not self.shared:
            shutil.rmtree(self.path, ignore_errors=True)


class RealNode:
    """One kubelet with its containerd, kube-proxy and CoreDNS, started and stopped with the
    cluster. Its bridge exists before the API server starts, so that the API server can listen on
    the bridge's address and pods reach it through the ``kubernetes`` Service."""

    def __init__(
        self,
        root: Path,
        binaries: Binaries,
        service_cidr: str,
        images: Sequence[Path],
        sandbox_image: str,
        name: str = "sovai-node",
    ) -> None:
        self.binaries = binaries
        self.images = list(images)
        self.sandbox_image = sandbox_image
        bridge = f"sovai{os.getpid() % 100000:05d}"[:15]
        self.layout = NodeLayout(root, name, bridge, free_subnet(), service_cidr)
        self._processes: dict[str, ManagedProcess] = {}
        self._network_created = False
        self._store: ImageStore | None = None
        self._ip_forward_before = IP_FORWARD.read_text()
        self._host_paths_before = {path for path in HOST_PATHS if path.exists()}

    @property
    def name(self) -> str:
        return self.layout.name

    def ctr(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """containerd's own client, in the namespace kubelet's CRI uses."""
        argv = [str(self.binaries["ctr"]), "--address", str(self.layout.containerd_socket)]
        return subprocess.run(
            [*argv, "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # -- start -----------------------------------------------------------------------------

    def create_network(self) -> None:
        """The node's bridge, with the node's address on it (before the API server starts).

        Pods have no default route, and the host forwards nothing between the bridge and any
        other interface: the CNI bridge plugin turns IP forwarding on (kube-proxy needs it for
        Services between pods), so these rules keep the bridge closed in both directions."""
        layout = self.layout
        _ip("link", "add", "name", layout.bridge, "type", "bridge")
        self._network_created = True
        _ip("addr", "add", f"{layout.node_ip}/{layout.subnet.prefixlen}", "dev", layout.bridge)
        _ip("link", "set", layout.bridge, "up")
        for rule in self._isolation_rules():
            _iptables("-I", *rule)

    def _isolation_rules(self) -> list[list[str]]:
        bridge = self.layout.bridge
        comment = ["-m", "comment", "--comment", f"sovai: {bridge} stays inside the cluster"]
        return [
            ["FORWARD", "-i", bridge, "!", "-o", bridge, *comment, "-j", "DROP"],
            ["FORWARD", "!", "-i", bridge, "-o", bridge, *comment, "-j", "DROP"],
        ]

    def start(self, components: NodeComponents) -> None:
        """containerd (with the images imported), kubelet, kube-proxy and CoreDNS."""
        self._components = components
        layout = self.layout
        for folder in ("containerd", "cni/net.d", "cni/ipam", "kubelet", "pod-logs", "pki"):
            (layout.root / folder).mkdir(parents=True, exist_ok=True)
        # Pods ask CoreDNS on the node's address, which serves the cluster's zone only and
        # forwards nothing: never the machine's resolver.
        layout.resolv_conf.write_text(f"nameserver {layout.node_ip}\noptions ndots:5\n")
        (layout.cni_conf_dir / "10-sovai.conflist").write_text(json.dumps(cni_config(layout)))
        self._store = ImageStore(layout.root / "containerd" / "root")
        self._start_containerd()
        # A shared store may hold what a killed run left: no old container may reach kubelet.
        self._remove_containers()
        self._import_images()
        self._start_kubelet()
        self._start_kube_proxy()
        self._start_coredns()

    def _start_containerd(self) -> None:
        config = self.layout.root / "containerd" / "config.toml"
        store = self._store.path if self._store else None
        config.write_text(to_toml(containerd_config(self.layout, self.sandbox_image, store)) + "\n")
        binary = self.binaries["containerd"]
        # containerd finds its shim (containerd-shim-runc-v2, beside it) through PATH.
        env = {"PATH": f"{binary.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        containerd = self._spawn("containerd", [str(binary), "--config", str(config)], env)
        containerd.wait_until(
            lambda: self.ctr("version", timeout=5).returncode == 0, 60, "serving its socket"
        )

    def _stored_images(self) -> dict[str, str]:
        """Reference -> manifest digest of every image in containerd's store."""
        listing = self.ctr("images", "list", timeout=60)
        if listing.returncode != 0:
            raise RealNodeError(f"ctr images list failed: {listing.stderr.strip()}")
        images = {}
        for line in listing.stdout.splitlines()[1:]:  # REF TYPE DIGEST SIZE PLATFORMS LABELS
            columns = line.split()
            if len(columns) >= 3:
                images[columns[0]] = columns[2]
        return images

    def _import_images(self) -> None:
        stored = set(self._stored_images().values())
        wanted = {archive: manifest_digest(archive) for archive in self.images}
        for archive, digest in wanted.items():
            if digest is not None and digest in stored:
                log.info("%s is in the node's image store already", archive.parent.name)
                continue
            started = time.monotonic()
            result = self.ctr("images", "import", "--no-unpack=false", str(archive))
            if result.returncode != 0:
                raise RealNodeError(f"ctr images import {archive} failed: {result.stderr.strip()}")
            log.info("imported %s in %.0f s", archive.parent.name, time.monotonic() - started)
        digests = set(wanted.values())
        if self._store is not None and self._store.shared and None not in digests:
            # One version of each image: containerd's garbage collector then frees the content
            # and snapshots of what is removed here.
            stale = [ref for ref, digest in self._stored_images().items() if digest not in digests]
            if stale:
                self.ctr("images", "remove", *stale, timeout=300)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None) -> ManagedProcess:
        process = self._components.spawn(name, argv, env)
        self._processes[name] = process
        return process

    def _kubeconfig(self, component: str, user: str, group: str | None = None) -> Path:
        pair = self._components.ca.issue(component, user, organization=group)
        path = self.layout.root / "pki" / f"{component}.kubeconfig"
        self._components.write_kubeconfig(path, user, pair)
        return path

    def _start_kubelet(self) -> None:
        layout = self.layout
        pki = layout.root / "pki"
        ca = self._components.ca
        kubeconfig = self._kubeconfig("kubelet", f"system:node:{layout.name}", "system:nodes")
        serving = ca.issue(
            "kubelet-serving", layout.name, server_hosts=[layout.node_ip, layout.name]
        )
        healthz = free_port()
        config = pki / "kubelet.yaml"
        config.write_text(
            yaml.safe_dump(
                kubelet_config(
                    layout, free_port(), healthz, ca.pair.cert, (serving.cert, serving.key)
                )
            )
        )
        labels = ",".join(f"{k}={v}" for k, v in layout.labels().items())
        kubelet = self._spawn(
            "kubelet",
            [
                str(self.binaries["kubelet"]),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={layout.root / 'kubelet'}",
                f"--cert-dir={pki}",
                f"--hostname-override={layout.name}",
                f"--node-ip={layout.node_ip}",
                f"--node-labels={labels}",
                "--v=1",
            ],
            None,
        )
        kubelet.wait_until(lambda: _healthy(healthz), 120, "healthy (/healthz)")

    def _start_kube_proxy(self) -> None:
        """Services in iptables mode; nothing on the machine's addresses, no sysctl of its own
        (conntrack limits as they are, no localhost node ports)."""
        layout = self.layout
        kubeconfig = self._kubeconfig("kube-proxy", "system:kube-proxy")  # system:node-proxier
        healthz = free_port()
        proxy = self._spawn(
            "kube-proxy",
            [
                str(self.binaries["kube-proxy"]),
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={layout.name}",
                "--proxy-mode=iptables",
                f"--cluster-cidr={layout.subnet}",
                f"--nodeport-addresses={layout.subnet}",
                "--iptables-localhost-nodeports=false",
                "--conntrack-max-per-core=0",
                f"--healthz-bind-address=127.0.0.1:{healthz}",
                f"--metrics-bind-address=127.0.0.1:{free_port()}",
                "--v=1",
            ],
            None,
        )
        proxy.wait_until(lambda: _healthy(healthz), 60, "healthy (/healthz)")

    def _start_coredns(self) -> None:
        """CoreDNS for cluster.local on the node's address (pods' resolv.conf names it). With no
        forward plugin, names outside the cluster's zone are refused, not looked up outside."""
        layout = self.layout
        kubeconfig = self._kubeconfig("coredns", COREDNS_USER)
        health = free_port()
        corefile = layout.root / "Corefile"
        corefile.write_text(coredns_corefile(layout, kubeconfig, health))
        dns = self._spawn("coredns", [str(self.binaries["coredns"]), "-conf", str(corefile)],
                          None)  # fmt: skip
        dns.wait_until(lambda: _healthy(health, "/health"), 60, "healthy (/health)")

    # -- stop ------------------------------------------------------------------------------

    def stop(
        self, drain: Callable[[], None] | None = None, report: Callable[[str], None] | None = None
    ) -> None:
        """Stop pods, kubelet and containerd, and remove what they made: containers and their
        shims, mounts, network namespaces, iptables chains, cgroups, the bridge. ``report``
        hears each step as it starts."""
        say = report or (lambda _: None)
        kubelet = self._processes.get("kubelet")
        if drain is not None and kubelet is not None and kubelet.running():
            say("the real node's pods (kubelet removes them through CRI and CNI)")
            try:
                drain()  # kubelet tears its pods down through CRI and CNI (IPs, netns)
            except Exception as error:  # a failing drain must not keep the rest running
                log.warning("draining the real node failed: %s", error)
        for name in ("coredns", "kube-proxy", "kubelet"):
            if name in self._processes:
                say(name)
                self._processes[name].stop()
        containerd = self._processes.get("containerd")
        if containerd is not None and containerd.running():
            say("containerd, its containers and shims")
            self._remove_containers()
            containerd.stop()
        self._kill_shims()
        say("the node's mounts, network namespaces, bridge, firewall rules and cgroups")
        self._unmount()
        # The image store (the runtime image alone is 11 GB unpacked) stays in the cache for the
        # next start when it is the shared one, and goes otherwise. The logs stay.
        if self._store is not None:
            self._store.release()
        if "kube-proxy" in self._processes:  # kube-proxy's own clean-up of its rules
            subprocess.run([str(self.binaries["kube-proxy"]), "--cleanup"], capture_output=True,
                           check=False)  # fmt: skip
        if self._network_created:
            _ip("link", "del", self.layout.bridge, check=False)
            for rule in self._isolation_rules():
                _iptables("-D", *rule, check=False)
            IP_FORWARD.write_text(self._ip_forward_before)
        self._remove_host_leftovers()
        # kubelet's chains and cgroups are the machine's, shared by every real node on it: they
        # go when no other node's kubelet runs, whoever made them (a run killed before its
        # stop leaves them, and would otherwise keep every later run from removing them).
        if not other_kubelets():
            _remove_kube_chains()
            _remove_cgroups("kubepods")

    def leftovers(self) -> list[str]:
        """What this node left behind after ``stop``: processes, shims, mounts, its bridge, its
        firewall rules. Empty when the teardown was complete."""
        found = [
            f"{name} (pids {members})"
            for name, process in self._processes.items()
            if (members := process.group_members())
        ]
        if shims := self._shim_pids():
            found.append(f"containerd shims (pids {shims})")
        found += [f"mount {target}" for target in self._mounts()]
        if Path("/sys/class/net", self.layout.bridge).exists():
            found.append(f"network interface {self.layout.bridge}")
        rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True,
                               check=False).stdout  # fmt: skip
        if f"sovai: {self.layout.bridge} " in rules:
            found.append(f"iptables FORWARD rules for {self.layout.bridge}")
        if not other_kubelets():
            if _kube_chains():
                found.append("kubelet's and kube-proxy's KUBE-* iptables chains")
            found += [f"cgroup {path}" for path in CGROUP_ROOT.glob("*/kubepods")]
        return found

    def _remove_host_leftovers(self) -> None:
        logs = Path("/var/log/containers")  # kubelet's links to the pods' logs (in our folder)
        for link in logs.glob("*.log") if logs.is_dir() else ():
            if link.is_symlink() and str(link.readlink()).startswith(str(self.layout.root)):
                link.unlink()
        for path in HOST_PATHS:
            if path in self._host_paths_before or not path.exists():
                continue
            if path.name == "device-plugins":
                (path / "kubelet.sock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty: someone else's too, keep it
                path.rmdir()

    def _remove_containers(self) -> None:
        listing = self.ctr("tasks", "list", "--quiet", timeout=30)
        for task in listing.stdout.split():
            self.ctr("tasks", "kill", "--signal", "SIGKILL", task, timeout=30)
            self.ctr("tasks", "delete", "--force", task, timeout=30)
        containers = self.ctr("containers", "list", "--quiet", timeout=30).stdout.split()
        if containers:
            self.ctr("containers", "delete", *containers, timeout=60)

    def _shim_pids(self) -> list[int]:
        """Shims outlive containerd by design; ours name our socket on their command line."""
        socket = str(self.layout.containerd_socket).encode()
        return pids_where(lambda proc: socket in (proc / "cmdline").read_bytes())

    def _kill_shims(self) -> None:
        for pid in self._shim_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _mounts(self) -> list[str]:
        """Mount points below the node's folder and its image store."""
        roots = [str(self.layout.root)]
        if self._store is not None:
            roots.append(str(self._store.path))
        return [
            target
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if any((target := line.split()[4]).startswith(root + "/") or target == root
                   for root in roots)
        ]  # fmt: skip

    def _unmount(self) -> None:
        """Every mount below the node's folder (overlay snapshots, volumes, the pods' network
        namespaces, which containerd pins in its state folder), deepest first."""
        for target in sorted(set(self._mounts()), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
        shutil.rmtree(self.layout.root / "containerd" / "state", ignore_errors=True)
