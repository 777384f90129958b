"""ModelDeployment end to end on the real control plane (deployment controller, scheduler) with
kwok nodes, the operator running as a subprocess.

kwok makes the serving pods Running and Ready, as a kubelet would. A FineTuneJob cannot train
inside kwok's fake pods, so the tests whose names say "driving_finetunejob_status" report the
job's outcome through the FineTuneJob's status subresource, as the operator would.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.cluster import KubectlError
from sovereign_operator.devcluster.nodes import REGION_LABEL

from .operator_process import (
    EU_REGIONS,
    TEST_IMAGE,
    OperatorProcess,
    conditions,
    finetunejob,
    ftj,
    get_json,
    setup_namespace,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VLLM_IMAGE = "registry.eu-west-par.example.eu/vllm/vllm-openai:v0.11.0"
MODEL_URI = "models:/faq-assistant/1"
UID_LABEL = "sovereign-ai.eu/modeldeployment-uid"


@pytest.fixture
def operator(crds: LocalCluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    setup_namespace(
        crds,
        namespace,
        allowedModelSources=[
            {"scheme": "models", "host": "*"},
            {"scheme": "hf", "host": "sovereign-ai-test"},
        ],
        egress={"allowedCIDRs": ["10.40.0.0/16"]},
    )
    env = {"SOVAI_VLLM_IMAGE": VLLM_IMAGE, "SOVAI_SERVING_PROGRESS_DEADLINE_SECONDS": "20"}
    with OperatorProcess(crds, tmp_path, namespaces=[namespace], env=env) as process:
        yield process
    crds.kubectl("delete", "sovereigntypolicy", f"pol-{namespace}", "--wait=false", check=False)


def modeldeployment(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"fineTuneJobRef": {"name": "ft"}},
        "runtime": "vllm",
        "replicas": 2,
        "resources": {"gpusPerReplica": 1, "cpu": "4", "memory": "16Gi"},
        "placement": {"policyRef": f"pol-{namespace}"},
    }
    body.update(spec)
    return {
        "apiVersion": "sovereign-ai.eu/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def apply(cluster: LocalCluster, manifest: dict[str, Any]) -> None:
    """Apply, retrying while the admission plugin has not yet discovered the SovereigntyPolicy
    kind its policies are parameterised by (it refreshes its mapping periodically after the
    CRDs are installed)."""

    def applied() -> bool:
        try:
            cluster.apply(manifest)
        except KubectlError as error:
            if "failed to find resource referenced by paramKind" in str(error.stderr):
                return False
            raise
        return True

    wait_for(applied, 60, "the admission policy to know SovereigntyPolicy", interval=2)


def mdep(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = get_json(cluster, "modeldeployment", name, "-n", namespace)
    return found


def wait_mdep(
    cluster: LocalCluster,
    namespace: str,
    name: str,
    phase: str,
    operator: OperatorProcess,
    timeout: float = 90.0,
    generation: int | None = None,
) -> dict[str, Any]:
    """Wait until the ModelDeployment reports ``phase`` (for ``generation``, when given)."""

    def reached() -> dict[str, Any] | None:
        obj = mdep(cluster, namespace, name) or {}
        status = obj.get("status") or {}
        if status.get("phase") != phase:
            return None
        if generation is not None and status.get("observedGeneration") != generation:
            return None
        return obj

    def explain() -> str:
        obj = mdep(cluster, namespace, name) or {}
        return f"status: {json.dumps(obj.get('status'), indent=1)}\n{operator.log_tail()}"

    result: dict[str, Any] = wait_for(reached, timeout, f"{name} {phase}", on_timeout=explain)
    return result


def drive_finetunejob_succeeded(cluster: LocalCluster, namespace: str, name: str) -> None:
    """Report the job Succeeded with verified residency through its status subresource, as
    the operator does when the Ray job ends; repeated until it sticks (a reconcile pass that
    was already running may write its older status once more)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def condition(kind: str, status: str, reason: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": "",
            "lastTransitionTime": now,
        }

    status = {
        "phase": "Succeeded",
        "conditions": [
            condition("InputsValidated", "True", "Valid"),
            condition("ResidencyVerified", "True", "RegionsAllowed"),
            condition("Succeeded", "True", "Succeeded"),
        ],
        "fineTunedModel": MODEL_URI,
        "mlflow": {"modelName": "faq-assistant", "modelVersion": "1", "modelUri": MODEL_URI},
    }

    def stuck() -> bool:
        cluster.kubectl(
            "patch", "finetunejob", name, "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": status}),
        )  # fmt: skip
        time.sleep(2)
        return ((ftj(cluster, namespace, name) or {}).get("status") or {}).get(
            "phase"
        ) == "Succeeded"

    wait_for(stuck, 30, f"FineTuneJob {name} to stay Succeeded")


def serving_pods(cluster: LocalCluster, namespace: str, uid: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(
        cluster, "pods", "-n", namespace, "-l", f"{UID_LABEL}={uid}"
    )["items"]
    return items


def node_regions(cluster: LocalCluster) -> dict[str, str]:
    return {
        n["metadata"]["name"]: n["metadata"]["labels"].get(REGION_LABEL, "")
        for n in get_json(cluster, "nodes")["items"]
    }


def child(cluster: LocalCluster, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = get_json(cluster, kind, name, "-n", namespace)
    return found


def gone(cluster: LocalCluster, kind: str, namespace: str, name: str) -> bool:
    return child(cluster, kind, namespace, name) is None


def test_unsucceeded_finetunejob_blocks_serving_then_ready_on_eu_nodes_driving_finetunejob_status(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    # A suspended job has not succeeded: the deployment must wait for it, with a clear reason.
    apply(crds, finetunejob("ft", namespace, suspend=True))
    apply(crds, modeldeployment("chat", namespace))
    waiting = wait_mdep(crds, namespace, "chat", "Pending", operator)
    resolved = conditions(waiting)["ModelResolved"]
    assert resolved["status"] == "False"
    assert resolved["reason"] == "FineTuneJobNotSucceeded"
    assert "spec.model.fineTuneJobRef: FineTuneJob ft is" in resolved["message"]
    assert "serving waits until it has Succeeded" in resolved["message"]
    assert child(crds, "deployment", namespace, "chat") is None

    drive_finetunejob_succeeded(crds, namespace, "ft")
    ready = wait_mdep(crds, namespace, "chat", "Ready", operator)
    uid = ready["metadata"]["uid"]
    status = ready["status"]
    cond = conditions(ready)
    assert {k: c["status"] for k, c in cond.items()} == {
        "ModelResolved": "True",
        "ResidencyVerified": "True",
        # No init container runs on kwok nodes: nothing was fetched, so nothing verified.
        "ModelVerified": "Unknown",
        "Progressing": "False",
        "Ready": "True",
    }
    assert status["modelUri"] == MODEL_URI
    assert status["readyReplicas"] == 2
    assert status["url"] == f"http://chat.{namespace}.svc:8000/v1"
    assert status["regions"] == sorted(EU_REGIONS)

    # The pods: bound only to EU nodes, and the status says where.
    regions = node_regions(crds)
    pods = serving_pods(crds, namespace, uid)
    assert len(pods) == 2
    assert {regions[p["spec"]["nodeName"]] for p in pods} <= set(EU_REGIONS)
    assert sorted((p["pod"], p["region"]) for p in status["placement"]) == sorted(
        (p["metadata"]["name"], regions[p["spec"]["nodeName"]]) for p in pods
    )

    # The children, with the right shape.
    deployment = child(crds, "deployment", namespace, "chat")
    assert deployment is not None
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == uid
    pod = deployment["spec"]["template"]["spec"]
    [term] = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term["matchExpressions"][0] == {
        "key": REGION_LABEL,
        "operator": "In",
        "values": sorted(EU_REGIONS),
    }
    # The job is LoRA with an unmerged adapter (the default): its base is fetched beside it,
    # and vLLM serves the base with the adapter as a LoRA module named like the deployment.
    [fetch_base, fetch] = pod["initContainers"]
    assert [fetch_base["name"], fetch["name"]] == ["fetch-base-model", "fetch-model"]
    assert {fetch_base["image"], fetch["image"]} == {TEST_IMAGE}
    base_uri = "hf://sovereign-ai-test/tiny-llama"
    assert {"name": "SOVAI_MODEL_URI", "value": base_uri} in fetch_base["env"]
    assert {"name": "SOVAI_MODEL_URI", "value": MODEL_URI} in fetch["env"]
    assert status["baseModelUri"] == base_uri
    [server] = pod["containers"]
    assert server["image"] == VLLM_IMAGE
    assert server["args"][:6] == [
        "/models/base",
        "--served-model-name",
        "chat-base",
        "--enable-lora",
        "--lora-modules",
        "chat=/models/model",
    ]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert server["securityContext"]["runAsNonRoot"] is True
    service = child(crds, "service", namespace, "chat")
    assert service is not None
    assert service["spec"]["ports"][0]["port"] == 8000
    assert child(crds, "pdb", namespace, "chat") is not None
    assert child(crds, "hpa", namespace, "chat") is None
    netpol = child(crds, "networkpolicy", namespace, "chat")
    assert netpol is not None
    assert netpol["spec"]["egress"][1] == {"to": [{"ipBlock": {"cidr": "10.40.0.0/16"}}]}


def test_update_suspend_resume_and_delete(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    apply(crds, modeldeployment("svc", namespace, model={"uri": MODEL_URI}))
    ready = wait_mdep(crds, namespace, "svc", "Ready", operator)
    uid = ready["metadata"]["uid"]
    assert conditions(ready)["ModelResolved"]["reason"] == "UriGiven"

    # A spec change rolls the Deployment out; one replica needs no PDB.
    patch = {"spec": {"replicas": 1, "serving": {"servedModelName": "faq-v2"}}}
    crds.kubectl(
        "patch", "modeldeployment", "svc", "-n", namespace, "--type=merge", "-p", json.dumps(patch)
    )
    updated = wait_mdep(crds, namespace, "svc", "Ready", operator, generation=2)
    assert updated["status"]["servedModelName"] == "faq-v2"
    assert updated["status"]["readyReplicas"] == 1
    deployment = child(crds, "deployment", namespace, "svc")
    assert deployment is not None
    assert "faq-v2" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    wait_for(lambda: child(crds, "pdb", namespace, "svc") is None, 30, "the PDB to go")
    wait_for(lambda: len(serving_pods(crds, namespace, uid)) == 1, 60, "one serving pod")

    # Suspend scales to zero and says so.
    crds.kubectl(
        "patch", "modeldeployment", "svc", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"suspend": True}}),
    )  # fmt: skip
    suspended = wait_mdep(crds, namespace, "svc", "Suspended", operator)
    assert conditions(suspended)["Ready"]["message"].startswith(
        "spec.suspend is true: scaled to zero"
    )
    deployment = child(crds, "deployment", namespace, "svc")
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 0
    wait_for(lambda: not serving_pods(crds, namespace, uid), 60, "the serving pods to go")

    crds.kubectl(
        "patch", "modeldeployment", "svc", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"suspend": False}}),
    )  # fmt: skip
    wait_mdep(crds, namespace, "svc", "Ready", operator)

    # Delete cleans up every child.
    crds.kubectl("delete", "modeldeployment", "svc", "-n", namespace, "--timeout=60s")
    for kind in ("deployment", "service", "networkpolicy"):
        wait_for(functools.partial(gone, crds, kind, namespace, "svc"), 30, f"{kind} deleted")


def test_unschedulable_rollout_past_its_deadline_is_degraded_with_the_pod_reason(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    # No node carries this GPU type: the pods stay Pending, unschedulable.
    spec = {
        "resources": {"gpusPerReplica": 1, "gpuType": "NVIDIA-B200", "cpu": "4", "memory": "16Gi"}
    }
    apply(crds, modeldeployment("stuck", namespace, model={"uri": MODEL_URI}, replicas=1, **spec))
    degraded = wait_mdep(crds, namespace, "stuck", "Degraded", operator, timeout=120)
    ready = conditions(degraded)["Ready"]
    assert ready["status"] == "False"
    assert ready["reason"] == "Unschedulable"
    assert "is unschedulable" in ready["message"]
    reasons = {
        e["reason"]
        for e in get_json(
            crds, "events", "-n", namespace, "--field-selector", "involvedObject.name=stuck"
        )["items"]
    }
    assert "Degraded" in reasons
