"""Where a job stands in its Kueue queue, from Kueue's Workloads (backends/kueue.py), and the
local cluster's Kueue webhooks rewritten to call the manager on this machine."""

from __future__ import annotations

from typing import Any

from sovereign_operator.backends.kueue import QueueStanding, queued_workload, standing
from sovereign_operator.devcluster.kueue import webhook_configurations


def workload(
    name: str,
    created: str,
    *,
    owner: str = "",
    priority: int | None = None,
    conditions: list[dict[str, Any]] | None = None,
    queue: str | None = "gpus",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"queueName": queue} if queue else {}
    if priority is not None:
        spec["priority"] = priority
    return {
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "creationTimestamp": created,
            "ownerReferences": [{"kind": "RayJob", "name": name, "uid": owner or f"uid-{name}"}],
        },
        "spec": spec,
        "status": {"conditions": conditions or []},
    }


def entries(*bodies: dict[str, Any]) -> list[Any]:
    found = [queued_workload(body) for body in bodies]
    return [entry for key, entry in (f for f in found if f is not None)]


def test_waiting_workloads_are_keyed_by_their_local_queue() -> None:
    found = queued_workload(workload("a", "2026-12-05T10:00:00Z"))
    assert found is not None
    assert found[0] == "team-a/gpus"
    assert queued_workload(workload("b", "2026-12-05T10:00:00Z", queue=None)) is None


def test_admitted_or_finished_workloads_wait_no_more() -> None:
    for kind in ("QuotaReserved", "Finished"):
        done = [{"type": kind, "status": "True"}]
        assert queued_workload(workload("a", "2026-12-05T10:00:00Z", conditions=done)) is None
    pending = [{"type": "QuotaReserved", "status": "False", "message": "insufficient quota"}]
    assert queued_workload(workload("a", "2026-12-05T10:00:00Z", conditions=pending))


def test_higher_priority_goes_first_then_the_older() -> None:
    waiting = entries(
        workload("old", "2026-12-05T10:00:00Z"),
        workload("new", "2026-12-05T10:05:00Z"),
        workload("urgent", "2026-12-05T10:09:00Z", priority=100),
    )
    assert standing(waiting, "uid-urgent") == QueueStanding(1, 3)
    assert standing(waiting, "uid-old") == QueueStanding(2, 3)
    assert standing(waiting, "uid-new") == QueueStanding(3, 3)
    assert standing(waiting, "uid-gone") is None


def test_a_workload_evicted_for_pods_not_ready_goes_to_the_back() -> None:
    evicted = [
        {"type": "Evicted", "status": "True", "reason": "PodsReadyTimeout",
         "lastTransitionTime": "2026-12-05T10:10:00Z"},
    ]  # fmt: skip
    preempted = [
        {"type": "Evicted", "status": "True", "reason": "Preempted",
         "lastTransitionTime": "2026-12-05T10:10:00Z"},
    ]  # fmt: skip
    waiting = entries(
        workload("requeued", "2026-12-05T09:00:00Z", conditions=evicted),
        workload("preempted", "2026-12-05T09:30:00Z", conditions=preempted),
        workload("later", "2026-12-05T10:05:00Z"),
    )
    assert standing(waiting, "uid-preempted") == QueueStanding(1, 3)
    assert standing(waiting, "uid-later") == QueueStanding(2, 3)
    assert standing(waiting, "uid-requeued") == QueueStanding(3, 3)


def test_the_standing_says_kueues_reason() -> None:
    pending = [
        {"type": "QuotaReserved", "status": "False",
         "message": "couldn't assign flavors to pod set head: insufficient unused quota"},
    ]  # fmt: skip
    waiting = entries(workload("a", "2026-12-05T10:00:00Z", conditions=pending))
    described = (standing(waiting, "uid-a") or QueueStanding(0, 0)).describe()
    assert described == (
        "position 1 of 1 waiting; Kueue: couldn't assign flavors to pod set head: "
        "insufficient unused quota"
    )


MANIFESTS = """
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: mutating-webhook-configuration
webhooks:
- clientConfig:
    service: {name: webhook-service, namespace: system, path: /mutate-ray-io-v1-rayjob}
  name: mrayjob.kb.io
  rules:
  - apiGroups: [ray.io]
    resources: [rayjobs]
- clientConfig:
    service: {name: webhook-service, namespace: system, path: /mutate--v1-pod}
  name: mpod.kb.io
  rules:
  - apiGroups: [""]
    resources: [pods]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: validating-webhook-configuration
webhooks:
- clientConfig:
    service:
      {name: webhook-service, namespace: system, path: /validate-kueue-x-k8s-io-v1beta2-workload}
  name: vworkload.kb.io
  rules:
  - apiGroups: [kueue.x-k8s.io]
    resources: [workloads]
"""


def test_webhooks_call_the_local_manager_and_only_for_the_kinds_it_runs() -> None:
    mutating, validating = webhook_configurations(MANIFESTS, "https://10.0.0.1:9443", "Q0E=")
    assert mutating["metadata"] == {"name": "kueue-mutating-webhook-configuration"}
    assert [w["name"] for w in mutating["webhooks"]] == ["mrayjob.kb.io"]  # no pod webhook
    assert mutating["webhooks"][0]["clientConfig"] == {
        "url": "https://10.0.0.1:9443/mutate-ray-io-v1-rayjob",
        "caBundle": "Q0E=",
    }
    assert [w["name"] for w in validating["webhooks"]] == ["vworkload.kb.io"]
