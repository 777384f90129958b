"""`helm install` of the chart with the locally built operator image: the operator runs as the
chart's Deployment on the real node, with the chart's ServiceAccount, and reconciles."""

from __future__ import annotations

import uuid

import pytest

from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.samples import cpu_lora_job

from .kube_helpers import (
    FULLNAME,
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

    # The operator in the pod reconciles a job: validated against the chart's default policy
    # (which allows claims, not object stores it cannot know: the job's data is moved to a
    # claim here), its NetworkPolicy and RayJob created, the RayJob suspended (so no trainer
    # pod is started here).
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    node_cluster.kubectl("create", "namespace", namespace)
    job = cpu_lora_job(
        "lora",
        namespace,
        claim="data",
        bucket="eu-unused",
        secret="unused",
        region="eu-west-par",
        registered_model_name="lora",
        experiment_name="e2e",
    )
    job["spec"]["dataset"] = {"trainingUri": "pvc://data/train.jsonl", "format": "chat"}
    del job["spec"]["output"]
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
    assert get(node_cluster, "networkpolicy", f"{name}-egress", "-n", namespace)
    logs = node_cluster.kubectl("logs", f"deployment/{FULLNAME}", "-n", SYSTEM_NAMESPACE).stdout
    assert "Forbidden" not in logs
    node_cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    uninstall_operator(node_cluster)
