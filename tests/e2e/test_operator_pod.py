"""`helm install` of the chart with the locally built operator image: the operator runs as the
chart's Deployment on the real node, with the chart's ServiceAccount, and reconciles."""

from __future__ import annotations

import uuid

import pytest
import yaml

from sovereign_operator.devcluster import LocalCluster

from .kube_helpers import (
    FULLNAME,
    REPO_ROOT,
    SYSTEM_NAMESPACE,
    get,
    install_operator,
    uninstall_operator,
    wait,
)

pytestmark = pytest.mark.e2e


def test_chart_runs_the_operator_as_a_pod(node_cluster: LocalCluster) -> None:
    install_operator(node_cluster)
    [pod] = get(node_cluster, "pods", "-n", SYSTEM_NAMESPACE)["items"]
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

    wait(suspended, 120, f"FineTuneJob {name} Suspended by the operator pod", node_cluster,
         (namespace,))  # fmt: skip
    status = get(node_cluster, "finetunejob", name, "-n", namespace)["status"]
    residency = {c["type"]: c for c in status["conditions"]}["ResidencyVerified"]
    assert residency["status"] == "True"
    assert "eu-only" in residency["message"]
    logs = node_cluster.kubectl("logs", f"deployment/{FULLNAME}", "-n", SYSTEM_NAMESPACE).stdout
    assert "Forbidden" not in logs
    node_cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    uninstall_operator(node_cluster)
