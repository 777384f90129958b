"""Local data-plane services for development and the demo: a Ray head and an MLflow server.

Both run as real processes in their own process groups, on free loopback ports, and are
stopped by PID, exactly like the control-plane components.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import requests

from .processes import ManagedProcess, free_port


def _venv_tool(name: str) -> str:
    """A console script installed beside the running interpreter (ray, mlflow)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(
            f"`{name}` is not installed; install the project with its extras: "
            "pip install -e '.[training,dev]'"
        )
    return found


class _LocalService:
    """One managed process with a readiness check; a context manager that stops it by PID."""

    start_timeout: float
    _process: ManagedProcess | None = None

    def _launch(self, process: ManagedProcess, ready: Callable[[], bool], what: str) -> None:
        process.start()
        self._process = process
        try:
            process.wait_until(ready, self.start_timeout, what)
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(grace=30.0)
            self._process = None


def _label_flag(labels: dict[str, str]) -> str:
    """``ray start --labels``' form: key=value pairs, comma-separated."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


class LocalRayHead(_LocalService):
    """``ray start --head --block`` with its dashboard (Job Submission API) and token auth.

    ``address`` is the dashboard URL the rayCluster backend submits to; ``token`` is the
    bearer token Ray requires (it never leaves this process except through a Secret).
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        num_cpus: int = 2,
        start_timeout: float = 180.0,
        labels: dict[str, str] | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.num_cpus = num_cpus
        # Ray node labels (`ray start --labels`): where the node says it is, for example
        # {"topology.kubernetes.io/region": "eu-west-par"}; the trainer reports them.
        self.labels = dict(labels or {})
        self.start_timeout = start_timeout
        self.token = secrets.token_hex(32)
        self._process = None
        self.dashboard_port = free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        # Ray's unix socket paths must stay short, so not a deep pytest/demo folder.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="sovai-ray-"))

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def __enter__(self) -> LocalRayHead:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ports = {
            "--port": free_port(),
            "--ray-client-server-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
            "--metrics-export-port": free_port(),
            "--node-manager-port": free_port(),
            "--object-manager-port": free_port(),
        }
        process = ManagedProcess(
            "ray-head",
            [
                _venv_tool("ray"),
                "start",
                "--head",
                "--block",
                f"--num-cpus={self.num_cpus}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                *(f"{flag}={port}" for flag, port in ports.items()),
                f"--temp-dir={self.temp_dir}",
                *([f"--labels={labels}"] if (labels := _label_flag(self.labels)) else []),
            ],
            self.log_dir,
            env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token},
        )
        self._launch(
            process,
            lambda: (
                requests.get(
                    f"{self.address}/api/jobs/", headers=self.auth_headers(), timeout=2
                ).status_code
                == 200
            ),
            "serving the Job Submission API",
        )
        return self

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class LocalMlflow(_LocalService):
    """``mlflow server`` on sqlite with a local artifact store: the embedded default."""

    def __init__(self, data_dir: Path, log_dir: Path, *, start_timeout: float = 120.0) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.start_timeout = start_timeout
        self.port = free_port()
        self.tracking_uri = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalMlflow:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        process = ManagedProcess(
            "mlflow",
            [
                _venv_tool("mlflow"),
                "server",
                f"--backend-store-uri=sqlite:///{self.data_dir / 'mlflow.db'}",
                f"--artifacts-destination={self.data_dir / 'artifacts'}",
                "--host=127.0.0.1",
                f"--port={self.port}",
                "--workers=1",
            ],
            self.log_dir,
        )
        self._launch(
            process,
            lambda: requests.get(f"{self.tracking_uri}/health", timeout=2).status_code == 200,
            "answering /health",
        )
        return self
