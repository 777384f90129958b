"""Run the operator as a real subprocess (`python -m sovereign_operator`) against a cluster.

Reusable by any integration test:

    with OperatorProcess(cluster, tmp_path, namespaces=[namespace]) as operator:
        ...
        operator.kill()      # SIGKILL, as a crash would
        operator.start()     # a fresh process, same settings

Its log (JSON lines) is kept in ``log_path`` and printed when a wait times out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from secrets_audit import OPERATOR_LOGS
from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.processes import free_port, tail

REPO_ROOT = Path(__file__).resolve().parents[2]
EU_REGIONS = ["eu-west-par", "eu-central-fra"]
TEST_LABEL = "sovereign-ai.eu/test-namespace"
UID_LABEL = "sovereign-ai.eu/job-uid"
# Registries the test policies allow; the operator's default image comes from one of them.
TEST_IMAGE = "registry.eu-west-par.example.eu/sovereign-ai/runtime:0.1.0"


def wait_for(
    check: Callable[[], Any],
    timeout: float = 60.0,
    what: str = "condition",
    interval: float = 0.5,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    detail = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last={last!r}\n{detail}")


def get_json(cluster: LocalCluster, *args: str) -> Any:
    """`kubectl get ... -o json`, parsed; None when the object does not exist."""
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr or "not found" in result.stderr:
            return None
        raise AssertionError(result.stderr)
    return json.loads(result.stdout)


class OperatorProcess:
    """The operator in its own process, with settings from SOVAI_* variables."""

    def __init__(
        self,
        cluster: LocalCluster,
        workdir: Path,
        *,
        namespaces: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        name: str = "operator",
    ) -> None:
        self.cluster = cluster
        self.log_path = workdir / f"{name}.log"
        OPERATOR_LOGS.append(self.log_path)  # the tier's secrets audit reads every one
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "PYTHONPATH": os.pathsep.join(
                [str(REPO_ROOT / "operator"), str(REPO_ROOT / "training")]
            ),
            "SOVAI_NAMESPACES": ",".join(namespaces),
            "SOVAI_HEALTH_PORT": str(self.health_port),
            "SOVAI_METRICS_PORT": str(self.metrics_port),
            "SOVAI_RECONCILE_INTERVAL_SECONDS": "1",
            "SOVAI_RUNTIME_IMAGE": TEST_IMAGE,
            "SOVAI_LOG_FORMAT": "json",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        """Start the process and wait until its liveness endpoint answers."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"--- start #{self.starts} ---\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sovereign_operator"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        log.close()
        wait_for(self._alive, timeout, "the operator's liveness endpoint", on_timeout=self.log_tail)
        return self

    def _alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"the operator exited with {self.process.returncode}:\n{self.log_tail()}"
            )
        try:
            return requests.get(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1).ok
        except requests.RequestException:
            return False

    def metrics(self) -> str:
        """The Prometheus exposition text of the running operator."""
        return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def kill(self) -> None:
        """SIGKILL: no cleanup, no chance to finish what it was doing."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 60) -> str:
        return f"--- operator log {self.log_path} ---\n{tail(self.log_path, lines)}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# -- FineTuneJob test objects and waits ------------------------------------------------


def policy_for(namespace: str, **spec: Any) -> dict[str, Any]:
    """A SovereigntyPolicy that selects only ``namespace`` (label it with ``label_namespace``)."""
    body: dict[str, Any] = {
        "regionLabel": "topology.kubernetes.io/region",
        "allowedRegions": EU_REGIONS,
        "storageEndpoints": [
            {"name": "scw-par", "url": "https://s3.fr-par.scw.cloud", "region": "eu-west-par"}
        ],
        "allowedStorage": [
            {"scheme": "s3", "host": "eu-*", "endpoint": "scw-par"},
            {"scheme": "file", "host": "*"},
        ],
        "allowedModelSources": [
            {"scheme": "hf", "host": "sovereign-ai-test"},
            {"scheme": "file", "host": "*"},
        ],
        "allowedRegistries": ["registry.eu-west-par.example.eu"],
        "namespaceSelector": {"matchLabels": {TEST_LABEL: namespace}},
    }
    body.update(spec)
    return {
        "apiVersion": "sovereign-ai.eu/v1alpha1",
        "kind": "SovereigntyPolicy",
        "metadata": {"name": f"pol-{namespace}"},
        "spec": body,
    }


def setup_namespace(cluster: LocalCluster, namespace: str, **policy: Any) -> str:
    """Label the namespace and create its policy; returns the policy name."""
    cluster.kubectl("label", "namespace", namespace, f"{TEST_LABEL}={namespace}", "--overwrite")
    manifest = policy_for(namespace, **policy)
    cluster.apply(manifest)
    return str(manifest["metadata"]["name"])


def finetunejob(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A small valid FineTuneJob bound to the namespace's test policy."""
    body: dict[str, Any] = {
        "baseModel": {"uri": "hf://sovereign-ai-test/tiny-llama"},
        "dataset": {"trainingUri": "s3://eu-data/faq/train.jsonl"},
        "resources": {"workers": 1, "gpusPerWorker": 1, "cpu": "2", "memory": "8Gi"},
        "placement": {"policyRef": f"pol-{namespace}"},
    }
    body.update(spec)
    return {
        "apiVersion": "sovereign-ai.eu/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


# Model sources for ModelDeployments: their models come from the MLflow registry.
MODEL_SOURCES = [{"scheme": "models", "host": "*"}, {"scheme": "hf", "host": "sovereign-ai-test"}]


def modeldeployment(name: str, namespace: str) -> dict[str, Any]:
    """A small valid ModelDeployment bound to the namespace's test policy (which must allow
    MODEL_SOURCES)."""
    return {
        "apiVersion": "sovereign-ai.eu/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": "models:/faq/1"},
            "runtime": "transformers",
            "resources": {"gpusPerReplica": 0, "cpu": "1", "memory": "2Gi"},
            "placement": {"policyRef": f"pol-{namespace}"},
        },
    }


def ftj(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = get_json(cluster, "finetunejob", name, "-n", namespace)
    return found


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


def wait_phase(
    cluster: LocalCluster,
    namespace: str,
    name: str,
    phase: str,
    timeout: float = 60.0,
    log: Any = None,
) -> dict[str, Any]:
    """Wait until the FineTuneJob reports ``phase``; returns the object."""

    def reached() -> dict[str, Any] | None:
        obj = ftj(cluster, namespace, name)
        if obj and (obj.get("status") or {}).get("phase") == phase:
            return obj
        return None

    def explain() -> str:
        obj = ftj(cluster, namespace, name) or {}
        text = f"status: {obj.get('status')}"
        return f"{text}\n{log()}" if log else text

    result: dict[str, Any] = wait_for(reached, timeout, f"{name} to be {phase}", on_timeout=explain)
    return result


def rayjobs(cluster: LocalCluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(cluster, "rayjobs.ray.io", "-n", namespace)["items"]
    return items


def owned(cluster: LocalCluster, kind: str, namespace: str, uid: str) -> list[dict[str, Any]]:
    """Objects of ``kind`` labelled as belonging to the FineTuneJob with ``uid``."""
    items: list[dict[str, Any]] = get_json(
        cluster, kind, "-n", namespace, "-l", f"{UID_LABEL}={uid}"
    )["items"]
    return items


def patch_rayjob_status(
    cluster: LocalCluster, namespace: str, name: str, status: dict[str, Any]
) -> None:
    """Drive the RayJob's status through its status subresource, as KubeRay would: a Ray
    dashboard cannot run inside kwok's fake pods, so nothing else can report the outcome."""
    cluster.kubectl(
        "patch",
        "rayjobs.ray.io",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def events(cluster: LocalCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(
        cluster,
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={name},involvedObject.kind=FineTuneJob",
    )["items"]
    return items
