"""A policy tightened or deleted under a job that already has a RayJob: the operator stops what
runs (the RayJob, and so its pods) within a sweep, fails the job with the reason, and keeps the
job and its evidence. Real control plane, KubeRay and kwok GPU nodes; the operator as a process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sovereign_operator.devcluster import LocalCluster

from .operator_process import (
    OperatorProcess,
    conditions,
    events,
    finetunejob,
    ftj,
    policy_for,
    rayjobs,
    setup_namespace,
    wait_for,
    wait_phase,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def operator(crds: LocalCluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    setup_namespace(crds, namespace)
    with OperatorProcess(crds, tmp_path, namespaces=[namespace]) as process:
        yield process
    crds.kubectl("delete", "sovereigntypolicy", f"pol-{namespace}", "--wait=false", check=False)


def in_frankfurt(name: str, namespace: str) -> dict[str, object]:
    placement = {"policyRef": f"pol-{namespace}", "regions": ["eu-central-fra"]}
    return finetunejob(name, namespace, placement=placement)


def stopped(crds: LocalCluster, namespace: str, name: str) -> bool:
    obj = ftj(crds, namespace, name) or {}
    phase = (obj.get("status") or {}).get("phase")
    return phase == "Failed" and not rayjobs(crds, namespace)


def test_a_tightened_policy_stops_the_jobs_rayjob(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    crds.apply(in_frankfurt("fra", namespace))
    wait_phase(crds, namespace, "fra", "Queued", log=operator.log_tail)
    assert rayjobs(crds, namespace)
    # Frankfurt is no longer allowed: nothing about the job changed, only the policy.
    crds.apply(policy_for(namespace, allowedRegions=["eu-west-par"]))
    wait_for(
        lambda: stopped(crds, namespace, "fra"),
        45,
        "the job Failed and its RayJob gone",
        on_timeout=operator.log_tail,
    )
    obj = ftj(crds, namespace, "fra")
    assert obj is not None  # the job, and its evidence, stay
    residency = conditions(obj)["ResidencyVerified"]
    assert residency["status"] == "False"
    assert "eu-central-fra" in residency["message"]
    reasons = {e["reason"] for e in events(crds, namespace, "fra")}
    assert "Stopped" in reasons


def test_a_deleted_policy_stops_the_jobs_rayjob(
    crds: LocalCluster, namespace: str, operator: OperatorProcess
) -> None:
    crds.apply(in_frankfurt("orphan", namespace))
    wait_phase(crds, namespace, "orphan", "Queued", log=operator.log_tail)
    assert rayjobs(crds, namespace)
    crds.kubectl("delete", "sovereigntypolicy", f"pol-{namespace}")
    wait_for(
        lambda: stopped(crds, namespace, "orphan"),
        45,
        "the job Failed and its RayJob gone",
        on_timeout=operator.log_tail,
    )
