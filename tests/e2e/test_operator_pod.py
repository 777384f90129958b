"""`helm install` of the chart with the locally built operator image: the operator runs as the
chart's Deployment on the real node, with the chart's ServiceAccount, and reconciles."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from sovereign_operator.devcluster import LocalCluster

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "sovereign-ai-operator"
RELEASE, NAMESPACE = "sovai", "sovereign-ai-system"
FULLNAME = "sovai-sovereign-ai-operator"


def helm(cluster: LocalCluster, *args: str) -> str:
    argv = [str(cluster.binaries["helm"]), f"--kubeconfig={cluster.kubeconfig}", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def get(cluster: LocalCluster, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return found


def wait(check: Any, timeout: float, what: str, cluster: LocalCluster) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    pods = cluster.kubectl("describe", "pods", "-n", NAMESPACE, check=False).stdout
    logs = cluster.kubectl("logs", f"deployment/{FULLNAME}", "-n", NAMESPACE, check=False)
    raise AssertionError(f"not {what} within {timeout} s\n{pods}\n{logs.stdout}{logs.stderr}")


def test_chart_runs_the_operator_as_a_pod(node_cluster: LocalCluster) -> None:
    helm(node_cluster, "install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace")

    def available() -> bool:
        status = get(node_cluster, "deployment", FULLNAME, "-n", NAMESPACE).get("status", {})
        return bool(status.get("availableReplicas"))

    # Ready means its /healthz answered kubelet's probe: Kopf is up and logged in.
    wait(available, 180, "Available", node_cluster)
    [pod] = get(node_cluster, "pods", "-n", NAMESPACE)["items"]
    assert node_cluster.real_node is not None
    assert pod["spec"]["nodeName"] == node_cluster.real_node.name
    assert pod["spec"]["serviceAccountName"] == FULLNAME

    # The operator in the pod reconciles a job: validated against the chart's default policy,
    # its RayJob created suspended (so no trainer pod is started here).
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    node_cluster.kubectl("create", "namespace", namespace)
    job = yaml.safe_load((REPO_ROOT / "examples" / "finetunejob-lora.yaml").read_text())
    job["metadata"]["namespace"] = namespace
    job["spec"]["suspend"] = True
    node_cluster.apply(job)
    name = job["metadata"]["name"]

    def suspended() -> bool:
        status = get(node_cluster, "finetunejob", name, "-n", namespace).get("status") or {}
        return status.get("phase") == "Suspended"

    wait(suspended, 120, f"FineTuneJob {name} Suspended by the operator pod", node_cluster)
    status = get(node_cluster, "finetunejob", name, "-n", namespace)["status"]
    residency = {c["type"]: c for c in status["conditions"]}["ResidencyVerified"]
    assert residency["status"] == "True"
    assert "eu-only" in residency["message"]
    logs = node_cluster.kubectl("logs", f"deployment/{FULLNAME}", "-n", NAMESPACE).stdout
    assert "Forbidden" not in logs
    node_cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    helm(node_cluster, "uninstall", RELEASE, "-n", NAMESPACE, "--wait")
