"""FineTuneJobs in a real Kueue queue (built from sigs.k8s.io/kueue, its RayJob integration on),
with the queue objects of examples/kueue/eu-gpu-queues.yaml (docs/kueue.md), on kwok GPU nodes.

Kueue suspends each queued RayJob through its own webhook, admits it when its region has
quota, and injects that region's node labels into its pods; nothing here suspends, admits or
writes a status in Kueue's or KubeRay's place.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kueue_queues import queue_objects
from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.nodes import REGION_LABEL

from .operator_process import (
    OperatorProcess,
    conditions,
    finetunejob,
    ftj,
    get_json,
    setup_namespace,
    wait_for,
    wait_phase,
)
from .test_finetunejob import NO_NODE_HAS_THIS_GPU, SHORT_DEADLINE, operator, operator_with

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# The operator fixture, imported to be found here by name.
__all__ = ["operator"]
OPERATOR_MANAGER = "sovereign-ai-operator"
# One worker with all 8 GPUs of a kwok H100 node in Paris: the example gives Paris 16 GPUs.
EIGHT_GPUS = {"workers": 1, "gpusPerWorker": 8, "cpu": "4", "memory": "16Gi"}
# Eight GPUs of a model no node has. Kueue counts GPUs, not models, so such a job is admitted
# and holds its quota, while its pods wait for a node: they stay until it ends. (On kwok's
# nodes a job whose pods all start ends by itself: kwok completes its submitter's pod, which
# runs no Ray, and KubeRay fails the job 30 s later.)
EIGHT_GPUS_HELD = {**EIGHT_GPUS, "gpuType": "NVIDIA-B200"}
IN_PARIS = {"regions": ["eu-west-par"]}


def queue_for(namespace: str, gpus: str = "16", *, flavors: tuple[str, ...] = ()) -> list[
    dict[str, Any]
]:  # fmt: skip
    """The example's queue objects for this test: Paris with ``gpus`` GPUs (and only
    ``flavors``, each with Paris' quota, when given)."""
    return queue_objects(namespace, {"nvidia.com/gpu": gpus}, flavors=flavors)


@pytest.fixture
def queue(crds: LocalCluster, namespace: str) -> Iterator[str]:
    """The LocalQueue's name; the test's ClusterQueue is deleted afterwards."""
    objects = queue_for(namespace)
    crds.apply(*objects)
    yield str(objects[-1]["metadata"]["name"])
    crds.kubectl("delete", "clusterqueue", f"eu-gpus-{namespace}", "--wait=false", check=False)


def queued(name: str, namespace: str, queue: str, **spec: Any) -> dict[str, Any]:
    """A FineTuneJob in ``queue`` that wants 8 GPUs in Paris (``spec`` overrides)."""
    placement = {"policyRef": f"pol-{namespace}", "queueName": queue, **IN_PARIS}
    return finetunejob(name, namespace, **{"resources": EIGHT_GPUS, "placement": placement, **spec})


def rayjob(crds: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = get_json(crds, "rayjobs.ray.io", name, "-n", namespace) or {}
    return found


def running_message(crds: LocalCluster, namespace: str, name: str) -> str:
    return str(conditions(ftj(crds, namespace, name) or {}).get("Running", {}).get("message", ""))


def waits_at(crds: LocalCluster, namespace: str, name: str, queue: str, place: str) -> bool:
    message = running_message(crds, namespace, name)
    return f"waits in queue {queue} for quota (position {place} waiting" in message


def admitted(crds: LocalCluster, namespace: str, name: str, *, bound: bool = False) -> bool:
    """Kueue let the RayJob go (it lifts the suspension) and KubeRay made its pods; with
    ``bound``, every one of them is bound to a node."""
    spec = rayjob(crds, namespace, name).get("spec")
    if spec is None or spec.get("suspend"):  # false is left out of the stored object
        return False
    pods = pods_of(crds, namespace, name)
    return bool(pods) and (not bound or all(p["spec"].get("nodeName") for p in pods))


def pods_of(crds: LocalCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    uid = (ftj(crds, namespace, name) or {}).get("metadata", {}).get("uid", "")
    items: list[dict[str, Any]] = get_json(
        crds, "pods", "-n", namespace, "-l", f"sovereign-ai.eu/job-uid={uid}"
    )["items"]
    return items


def regions_of_pods(crds: LocalCluster, namespace: str, name: str) -> set[str]:
    items = get_json(crds, "nodes")["items"]
    nodes = {n["metadata"]["name"]: n["metadata"]["labels"] for n in items}
    return {nodes[p["spec"]["nodeName"]][REGION_LABEL] for p in pods_of(crds, namespace, name)}


def queue_state(crds: LocalCluster, namespace: str, operator: OperatorProcess) -> str:
    """What a failed wait shows: each RayJob's suspend and status, each Workload's
    conditions, the end of Kueue's log, then the operator's log."""
    lines = []
    for rj in get_json(crds, "rayjobs.ray.io", "-n", namespace)["items"]:
        status = rj.get("status") or {}
        lines.append(f"RayJob {rj['metadata']['name']}: suspend={rj['spec'].get('suspend')} "
                     f"deployment={status.get('jobDeploymentStatus')}")  # fmt: skip
    for wl in get_json(crds, "workloads.kueue.x-k8s.io", "-n", namespace)["items"]:
        found = [
            f"{c['type']}={c['status']} ({c.get('message', '')})"
            for c in (wl.get("status") or {}).get("conditions") or []
        ]
        lines.append(f"Workload {wl['metadata']['name']}: {'; '.join(found)}")
    log = crds.component_logs().get("kueue")
    kueue_log = log.read_text(errors="replace").splitlines()[-15:] if log else []
    return "\n".join([*lines, "--- kueue log ---", *kueue_log, operator.log_tail()])


def waiter(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> Callable[[Callable[[], Any], float, str], Any]:
    """``wait_for`` that shows the queue's state (``queue_state``) when it times out."""

    def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
        return wait_for(
            check, timeout, what, on_timeout=lambda: queue_state(crds, namespace, operator)
        )

    return until


def spec_writes(rj: dict[str, Any]) -> dict[str, list[str]]:
    """Who wrote which of the RayJob's spec fields that both Kueue and the operator care
    about (its managed fields, as ``kubectl get --show-managed-fields`` shows them)."""
    found: dict[str, list[str]] = {}
    for entry in rj["metadata"].get("managedFields") or []:
        spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if "f:suspend" in spec:
            found.setdefault("suspend", []).append(entry["manager"])
    return found


def test_three_jobs_with_quota_for_two_are_admitted_two_at_a_time(
    crds: LocalCluster, namespace: str, queue: str, operator: OperatorProcess
) -> None:
    until = waiter(crds, namespace, operator)
    for index in range(3):
        crds.apply(queued(f"q-{index}", namespace, queue, resources=EIGHT_GPUS_HELD))
        time.sleep(1.1)  # Kueue orders by creation time, to the second
    until(lambda: admitted(crds, namespace, "q-0"), 120, "q-0 to be admitted")
    until(lambda: admitted(crds, namespace, "q-1"), 120, "q-1 to be admitted")
    until(
        lambda: waits_at(crds, namespace, "q-2", queue, "1 of 1"), 90, "q-2 to wait first in line"
    )
    third = ftj(crds, namespace, "q-2") or {}
    assert third["status"]["phase"] == "Queued"
    # Kueue's own reason, passed through (it names the last flavor it tried).
    assert "; Kueue: couldn't assign flavors to pod set" in running_message(crds, namespace, "q-2")
    assert rayjob(crds, namespace, "q-2")["spec"]["suspend"] is True
    assert pods_of(crds, namespace, "q-2") == []

    # A fourth queues behind it.
    crds.apply(queued("q-3", namespace, queue, resources=EIGHT_GPUS_HELD))
    until(
        lambda: waits_at(crds, namespace, "q-3", queue, "2 of 2"), 60, "q-3 to wait second in line"
    )

    # q-0 ends (cancelled), its quota comes back, and the queue moves: q-2 is admitted, q-3 is
    # next, and q-1 still holds the rest.
    crds.kubectl("patch", "finetunejob", "q-0", "-n", namespace, "--type=merge",
                 "-p", '{"spec": {"cancel": true}}')  # fmt: skip
    wait_phase(crds, namespace, "q-0", "Cancelled", log=operator.log_tail)
    until(lambda: admitted(crds, namespace, "q-2"), 120, "q-2 to be admitted")
    until(lambda: waits_at(crds, namespace, "q-3", queue, "1 of 1"), 60, "q-3 to move up")
    assert admitted(crds, namespace, "q-1")

    # No tug of war over the RayJob: Kueue alone writes spec.suspend, and once admitted the
    # RayJob's spec stays as Kueue left it (no write from either side moves it again).
    running = rayjob(crds, namespace, "q-1")
    writers = spec_writes(running)
    assert OPERATOR_MANAGER not in writers.get("suspend", []), writers
    generation = running["metadata"]["generation"]
    time.sleep(10)
    assert rayjob(crds, namespace, "q-1")["metadata"]["generation"] == generation


def test_a_flavor_in_a_forbidden_region_never_takes_the_job(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    us_east = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ResourceFlavor",
        "metadata": {"name": "us-east-1"},
        "spec": {"nodeLabels": {REGION_LABEL: "us-east-1"}},
    }
    # A ClusterQueue whose only flavor, with room to spare, is in a region the namespace's
    # policy forbids (it allows Paris and Frankfurt).
    objects = queue_for(namespace, flavors=("us-east-1",))
    crds.apply(us_east, *objects)
    queue = str(objects[-1]["metadata"]["name"])
    until = waiter(crds, namespace, operator)
    try:
        crds.apply(queued("far", namespace, queue, placement={
            "policyRef": f"pol-{namespace}", "queueName": queue,
        }))  # fmt: skip
        until(
            lambda: waits_at(crds, namespace, "far", queue, "1 of 1"),
            90,
            "the job to wait in its queue",
        )
        # Kueue matched the flavor against the job's required residency affinity and refused.
        assert "flavor us-east-1 doesn't match node affinity" in running_message(
            crds, namespace, "far"
        ), running_message(crds, namespace, "far")
        time.sleep(5)
        assert rayjob(crds, namespace, "far")["spec"]["suspend"] is True
        assert pods_of(crds, namespace, "far") == []
        # A flavor in an allowed region added to the queue: the job is admitted there.
        cluster_queue = objects[-2]
        [group] = cluster_queue["spec"]["resourceGroups"]
        group["flavors"].append({**copy.deepcopy(group["flavors"][0]), "name": "eu-west-par"})
        crds.apply(cluster_queue)
        until(lambda: admitted(crds, namespace, "far", bound=True), 120, "the job to be admitted")
        assert regions_of_pods(crds, namespace, "far") == {"eu-west-par"}
    finally:
        crds.kubectl("delete", "clusterqueue", f"eu-gpus-{namespace}", "--wait=false",
                     check=False)  # fmt: skip


def test_a_job_held_in_its_queue_is_not_failed_by_its_startup_deadline(
    crds: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    setup_namespace(crds, namespace)
    # No GPU quota at all: Kueue holds the job until some is given.
    objects = queue_for(namespace, gpus="0")
    crds.apply(*objects)
    queue = str(objects[-1]["metadata"]["name"])
    with operator_with(
        crds, namespace, tmp_path, SOVAI_STARTUP_DEADLINE_SECONDS=str(SHORT_DEADLINE)
    ) as operator:
        until = waiter(crds, namespace, operator)
        # No node has this GPU either: once admitted, the attempt cannot start, and its own
        # deadline runs from the admission.
        resources = {**NO_NODE_HAS_THIS_GPU}
        placement = {"policyRef": f"pol-{namespace}", "queueName": queue, **IN_PARIS}
        crds.apply(finetunejob("held", namespace, resources=resources, placement=placement))
        until(
            lambda: waits_at(crds, namespace, "held", queue, "1 of 1"),
            90,
            "the job to wait for quota",
        )
        # Well past its start-up deadline, it still waits.
        time.sleep(2 * SHORT_DEADLINE)
        obj = ftj(crds, namespace, "held") or {}
        assert obj["status"]["phase"] == "Queued", obj["status"]
        assert waits_at(crds, namespace, "held", queue, "1 of 1")
        assert rayjob(crds, namespace, "held")["spec"]["suspend"] is True
        # Quota is given; Kueue admits it.
        crds.apply(queue_for(namespace, gpus="8")[-2])
        until(
            lambda: (
                not rayjob(crds, namespace, "held").get("spec", {"suspend": True}).get("suspend")
            ),
            90,
            "Kueue to admit the job",
        )
        released = time.monotonic()
        obj = wait_phase(crds, namespace, "held", "Failed", timeout=120, log=operator.log_tail)
        assert obj["status"]["error"]["code"] == "StartupTimeout"
        assert f"startupDeadlineSeconds ({SHORT_DEADLINE} s)" in obj["status"]["error"]["message"]
        # Its deadline ran from the admission, not from the creation.
        assert time.monotonic() - released >= SHORT_DEADLINE - 3
    crds.kubectl("delete", "clusterqueue", f"eu-gpus-{namespace}", "--wait=false", check=False)
