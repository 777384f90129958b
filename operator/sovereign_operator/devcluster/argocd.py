"""Argo CD in the local cluster: its application controller and repo server (one multi-call
binary built from its Go module by hack/build-control-plane.sh), Redis (Debian's redis-server)
as their cache, and a git server (`git daemon`) on loopback that holds what users keep in git.

    with LocalCluster(...) as cluster, ArgoCD(cluster) as argocd:
        repo = argocd.repository("platform")
        repo.copy(chart_folder, "charts/sovereign-ai-operator")
        repo.commit("the operator's chart")
        cluster.apply(application)   # repoURL: repo.url

Everything runs on this machine, next to the control plane, as the cluster's other controllers
do: the controller reaches the API server through the cluster's admin kubeconfig, as Argo CD's
"in-cluster" destination (https://kubernetes.default.svc); every listener is on 127.0.0.1 but
one: the application controller's metrics server binds 0.0.0.0 (Argo CD 3.3 has no flag for
its address), so its port is closed to every interface but loopback by a firewall rule made
before the controller starts and removed after it stops (``LoopbackOnly``).
Argo CD's own settings are what a user's installation holds: the CRDs of the same module
version, the default AppProject, and the ``argocd-cm`` the chart's docs tell users to write
(charts/sovereign-ai-operator/argocd/argocd-cm.yaml, applied unchanged).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import requests

from .binaries import BinariesUnavailableError, find_tool, repo_root
from .processes import ClusterStartError, ManagedProcess, free_port

if TYPE_CHECKING:
    from .cluster import LocalCluster

NAMESPACE = "argocd"
ARGOCD_CM = Path("charts") / "sovereign-ai-operator" / "argocd" / "argocd-cm.yaml"
# Where Redis and git daemon come from (hack/install-packages.sh installs both).
REDIS_SERVER = "/usr/bin/redis-server"
GIT = "git"


class LoopbackOnly:
    """Firewall rules that refuse a port's TCP connections from any interface but loopback
    (iptables and ip6tables, INPUT): for a listener that cannot be told to bind 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.commands = [c for c in ("iptables", "ip6tables") if shutil.which(c)]

    def _rule(self, command: str, action: str) -> subprocess.CompletedProcess[str]:
        rule = ["INPUT", "-p", "tcp", "--dport", str(self.port), "!", "-i", "lo", "-j", "REJECT"]
        return subprocess.run([command, action, *rule], capture_output=True, text=True, check=False)

    def close(self) -> None:
        if os.geteuid() != 0 or "iptables" not in self.commands:
            raise ClusterStartError(
                f"the Argo CD application controller's metrics port {self.port} listens on every "
                "interface; closing it to all but loopback needs root and iptables"
            )
        for command in self.commands:
            result = self._rule(command, "-I")
            if result.returncode != 0:
                raise ClusterStartError(f"{command} -I INPUT failed: {result.stderr.strip()}")

    def open(self) -> None:
        for command in self.commands:
            while self._rule(command, "-C").returncode == 0:
                self._rule(command, "-D")

    def left(self) -> list[str]:
        return [
            f"{command} rule for port {self.port}"
            for command in self.commands
            if self._rule(command, "-C").returncode == 0
        ]


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _healthz(port: int) -> bool:
    return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200


def default_project() -> dict[str, Any]:
    """The AppProject ``default`` that Argo CD's API server creates in an installation (it is
    not run here): any repository, any destination, any kind."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "default", "namespace": NAMESPACE},
        "spec": {
            "sourceRepos": ["*"],
            "destinations": [{"server": "*", "namespace": "*"}],
            "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
        },
    }


def settings_secret() -> dict[str, Any]:
    """``argocd-secret``, which Argo CD's settings manager reads: the key its API server makes
    at first start (not run here, and without it the controller finds no cluster); no SSO, no
    admin password, no web UI."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "argocd-secret",
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "argocd"},
        },
        "stringData": {"server.secretkey": secrets.token_urlsafe(32)},
    }


class GitRepository:
    """A repository served by the git server: a bare repository (what `git daemon` serves) and
    a working copy beside it, where files are written, committed and pushed as a user would."""

    def __init__(self, bare: Path, work: Path, url: str) -> None:
        self.bare = bare
        self.work = work
        self.url = url

    def git(self, *args: str, cwd: Path | None = None) -> str:
        result = subprocess.run(
            [GIT, "-c", "user.name=sovai", "-c", "user.email=sovai@example.eu", *args],
            cwd=cwd or self.work,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def init(self) -> None:
        self.bare.parent.mkdir(parents=True, exist_ok=True)
        self.git(
            "init",
            "--quiet",
            "--bare",
            "--initial-branch=main",
            str(self.bare),
            cwd=self.bare.parent,
        )
        self.git("clone", "--quiet", str(self.bare), str(self.work), cwd=self.bare.parent)

    def write(self, path: str, text: str) -> None:
        target = self.work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def copy(self, source: Path, path: str) -> None:
        """Copy a folder of this checkout (such as the chart) into the repository at ``path``."""
        shutil.copytree(source, self.work / path, dirs_exist_ok=True)

    def remove(self, path: str) -> None:
        self.git("rm", "--quiet", "-r", path)

    def commit(self, message: str) -> str:
        """Commit everything in the working copy and push it to the served repository; returns
        the new commit's hash."""
        self.git("add", "--all")
        self.git("commit", "--quiet", "-m", message)
        self.git("push", "--quiet", "origin", "HEAD:main")
        return self.git("rev-parse", "HEAD").strip()


class ArgoCD:
    """Argo CD's application controller and repo server, Redis and a git server, started
    against a running LocalCluster; a context manager that stops them by PID on exit.

    ``binary``: Argo CD's multi-call binary (found in the per-version cache by default; it is
    never built here: hack/build-control-plane.sh builds it). ``resync_seconds``: how often the
    controller compares every Application with git without being asked (Argo CD's default is
    180 s; a refresh, as `argocd app get --refresh` asks for one, is immediate).
    """

    def __init__(
        self,
        cluster: LocalCluster,
        *,
        binary: Path | None = None,
        start_timeout: float = 120.0,
        resync_seconds: int = 30,
    ) -> None:
        found = binary or find_tool("argocd")
        if found is None:
            raise BinariesUnavailableError(
                "Argo CD's binary (argocd) is not built: run `hack/build-control-plane.sh "
                "argocd` (or `make control-plane`)"
            )
        self.binary = found
        self.crds = found.parent / "crds"
        self.cluster = cluster
        self.root = cluster.workdir / "argocd"
        self.log_dir = cluster.log_dir
        self.start_timeout = start_timeout
        self.resync_seconds = resync_seconds
        self.git_port = 0
        self._processes: list[ManagedProcess] = []
        self._fences: list[LoopbackOnly] = []

    # -- public API ------------------------------------------------------------------------

    def repository(self, name: str) -> GitRepository:
        """A new, empty repository on the git server, served at ``git://127.0.0.1:<port>/<name>``."""
        repo = GitRepository(
            self.root / "git" / name,
            self.root / "work" / name,
            f"git://127.0.0.1:{self.git_port}/{name}",
        )
        repo.init()
        return repo

    def component_logs(self) -> dict[str, Path]:
        return {p.name: p.log_path for p in self._processes}

    def fenced(self) -> list[int]:
        """The ports now closed to every interface but loopback (``LoopbackOnly``)."""
        return [fence.port for fence in self._fences if fence.left()]

    def leftovers(self) -> list[str]:
        """Processes ``stop`` left behind; empty when the teardown was complete."""
        return [
            f"{p.name} (pids {members})" for p in self._processes if (members := p.group_members())
        ] + [rule for fence in self._fences for rule in fence.left()]

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> ArgoCD:
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
        """Redis, the git server, Argo CD's settings in the cluster, the repo server and the
        application controller, each waited for; on any failure stop what started, then raise."""
        for folder in ("git", "work", "redis", "tmp"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        try:
            redis_port = self._start_redis()
            self._start_git_daemon()
            self._install_settings()
            repo_port = self._start_repo_server(redis_port)
            self._start_controller(redis_port, repo_port)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.stop()
        for fence in self._fences:
            fence.open()

    # -- steps -----------------------------------------------------------------------------

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.log_dir, env, cwd=self.root)
        process.start()
        self._processes.append(process)
        return process

    def _start_redis(self) -> int:
        if not Path(REDIS_SERVER).is_file():
            raise ClusterStartError(
                f"{REDIS_SERVER} is missing: Argo CD's cache is Debian's redis-server "
                "(hack/install-packages.sh installs it)"
            )
        port = free_port()
        redis = self._spawn(
            "argocd-redis",
            [
                REDIS_SERVER,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(self.root / "redis"),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        )
        redis.wait_until(lambda: _listening(port), self.start_timeout, "listening")
        return port

    def _start_git_daemon(self) -> None:
        self.git_port = free_port()
        root = self.root / "git"
        daemon = self._spawn(
            "git-daemon",
            [
                GIT,
                "daemon",
                "--reuseaddr",
                "--listen=127.0.0.1",
                f"--port={self.git_port}",
                f"--base-path={root}",
                "--export-all",
                str(root),
            ],
        )
        daemon.wait_until(lambda: _listening(self.git_port), self.start_timeout, "listening")

    def _install_settings(self) -> None:
        cluster = self.cluster
        cluster.kubectl("apply", "--server-side", "-f", str(self.crds), timeout=120)
        cluster.wait_for_crds("applications.argoproj.io", "appprojects.argoproj.io")
        cluster.kubectl("create", "namespace", NAMESPACE, check=False)
        root = repo_root()
        if root is None:
            raise ClusterStartError(f"no source checkout holding {ARGOCD_CM}")
        # As users are told to write it: the chart's file, unchanged.
        cluster.kubectl("apply", "--server-side", "-f", str(root / ARGOCD_CM))
        cluster.apply(settings_secret(), default_project())

    def _start_repo_server(self, redis_port: int) -> int:
        port, metrics = free_port(), free_port()
        helm = self.cluster.binaries["helm"]
        # The repo server renders charts with the helm on its PATH and clones with git.
        path = f"{helm.parent}:/usr/local/bin:/usr/bin:/bin"
        repo = self._spawn(
            "argocd-repo-server",
            [
                str(self.binary),
                "--address=127.0.0.1",
                f"--port={port}",
                "--metrics-address=127.0.0.1",
                f"--metrics-port={metrics}",
                "--disable-tls",
                f"--redis=127.0.0.1:{redis_port}",
                "--logformat=text",
            ],
            env={
                "ARGOCD_BINARY_NAME": "argocd-repo-server",
                "PATH": path,
                # No GnuPG keyring to verify commits with.
                "ARGOCD_GPG_ENABLED": "false",
                "TMPDIR": str(self.root / "tmp"),
                "HOME": str(self.root),
            },
        )
        repo.wait_until(lambda: _healthz(metrics), self.start_timeout, "healthy (/healthz)")
        return port

    def _start_controller(self, redis_port: int, repo_port: int) -> None:
        metrics = free_port()
        # Its metrics server binds 0.0.0.0 whatever the flags: closed to all but loopback first.
        fence = LoopbackOnly(metrics)
        self._fences.append(fence)
        fence.close()
        controller = self._spawn(
            "argocd-application-controller",
            [
                str(self.binary),
                f"--kubeconfig={self.cluster.kubeconfig}",
                f"--namespace={NAMESPACE}",
                f"--repo-server=127.0.0.1:{repo_port}",
                "--repo-server-plaintext",
                f"--redis=127.0.0.1:{redis_port}",
                f"--metrics-port={metrics}",
                f"--app-resync={self.resync_seconds}",
                "--status-processors=4",
                "--operation-processors=2",
                # Each resource's health in the Application's status, where `kubectl get
                # application -o yaml` shows it (docs/gitops.md:
                # controller.resource.health.persist).
                "--persist-resource-health",
                "--logformat=text",
            ],
            env={
                "ARGOCD_BINARY_NAME": "argocd-application-controller",
                # The in-cluster destination (https://kubernetes.default.svc) through the
                # kubeconfig: this controller runs beside the API server, not in a pod.
                "ARGOCD_FAKE_IN_CLUSTER": "true",
                "KUBECONFIG": str(self.cluster.kubeconfig),
                "HOME": str(self.root),
            },
        )
        controller.wait_until(lambda: _healthz(metrics), self.start_timeout, "healthy (/healthz)")
