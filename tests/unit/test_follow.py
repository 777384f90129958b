"""The follow-up sweep passes over the jobs whose children changed or whose deadline came,
and only those (pure selection logic; the passes themselves are integration-tested)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from offline_state import offline_state

from sovereign_operator.backends.kueue import QueuedWorkload
from sovereign_operator.backends.pods import PodFacts
from sovereign_operator.handlers import finetunejob_follow, modeldeployment
from sovereign_operator.handlers.finetunejob import _observed_children, _seen, needs_pass
from sovereign_operator.handlers.state import JobRef, OperatorState


def rayjob(version: str) -> dict[str, Any]:
    return {"metadata": {"name": "ft", "resourceVersion": version}, "status": {}}


def queued_rayjob(version: str) -> dict[str, Any]:
    """A RayJob Kueue holds suspended in LocalQueue gpus of team-a."""
    metadata = {
        "name": "ft",
        "namespace": "team-a",
        "uid": "rj-1",
        "resourceVersion": version,
        "labels": {"kueue.x-k8s.io/queue-name": "gpus"},
    }
    return {"metadata": metadata, "spec": {"suspend": True}, "status": {}}


@pytest.fixture
def state() -> OperatorState:
    state = offline_state()  # selection does no I/O
    state.indexes = {"sovai_rayjobs": {"u1": [rayjob("5")]}, "sovai_pods": {}}
    return state


def seen(
    state: OperatorState, uid: str, version: str, pods: tuple[PodFacts, ...], wait: float
) -> None:
    state.seen[uid] = (_seen(version, pods, None), time.monotonic() + wait)


def test_a_job_never_passed_over_needs_a_pass(state: OperatorState) -> None:
    assert needs_pass(state, "u1")


def test_nothing_changed_and_no_deadline_means_no_pass(state: OperatorState) -> None:
    seen(state, "u1", "5", (), 60)
    assert not needs_pass(state, "u1")


def test_a_changed_rayjob_needs_a_pass(state: OperatorState) -> None:
    seen(state, "u1", "5", (), 60)
    state.indexes["sovai_rayjobs"]["u1"] = [rayjob("6")]
    assert needs_pass(state, "u1")


def test_a_changed_pod_needs_a_pass(state: OperatorState) -> None:
    seen(state, "u1", "5", (), 60)
    state.indexes["sovai_pods"]["u1"] = [PodFacts("ft-head", "team-a", "node-1", "Pending")]
    assert needs_pass(state, "u1")


def test_a_move_in_its_kueue_queue_needs_a_pass(state: OperatorState) -> None:
    """Another workload admitted ahead of it changes only that workload, not the job's
    RayJob or pods: its place in the queue is what moves, and the status must say so."""
    ahead = QueuedWorkload(0, "2026-12-05T10:00:00Z", "other", "rj-0")
    mine = QueuedWorkload(0, "2026-12-05T10:00:01Z", "mine", "rj-1")
    waiting = {"team-a/gpus": [ahead, mine]}
    state.indexes = {"sovai_rayjobs": {"u1": [queued_rayjob("5")]}, "sovai_workloads": waiting}
    state.seen["u1"] = (_seen("5", (), None), time.monotonic() + 60)
    assert needs_pass(state, "u1")  # its standing (2 of 2) was never seen
    standing = _observed_children(state.indexes, "u1")[2]
    assert standing is not None
    assert standing.position == 2
    state.seen["u1"] = (_seen("5", (), standing), time.monotonic() + 60)
    assert not needs_pass(state, "u1")
    waiting["team-a/gpus"] = [mine]  # the one ahead was admitted
    assert needs_pass(state, "u1")


def test_a_deadline_reached_needs_a_pass(state: OperatorState) -> None:
    seen(state, "u1", "5", (), -1)
    assert needs_pass(state, "u1")


def test_the_sweep_follows_only_due_jobs_and_survives_a_failing_one(
    state: OperatorState, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    state.indexes["sovai_rayjobs"].update({"u2": [rayjob("7")], "u3": [rayjob("8")]})
    seen(state, "u1", "5", (), 60)  # unchanged: skipped
    seen(state, "u2", "6", (), 60)  # its RayJob moved on: due
    state.jobs.update({u: JobRef("team-a", f"job-{u}") for u in ("u1", "u2", "u3")})  # u3: new
    followed: list[str] = []

    def follow(state: OperatorState, uid: str, job: JobRef) -> None:
        followed.append(uid)
        if uid == "u3":
            raise RuntimeError("API server unavailable")

    monkeypatch.setattr(finetunejob_follow, "follow", follow)
    assert asyncio.run(finetunejob_follow.sweep(state)) == 2
    assert sorted(followed) == ["u2", "u3"]
    assert "follow-up of FineTuneJob team-a/job-u3 failed" in caplog.text


def test_a_changed_policy_makes_every_job_due(state: OperatorState) -> None:
    state.indexes = {
        **state.indexes,
        "sovai_policies": {"eu-only": [{"allowedRegions": ["eu-west-par"]}]},
    }
    state.jobs["u1"] = JobRef("team-a", "ft")
    asyncio.run(finetunejob_follow.sweep(state))  # the first sweep learns the policies
    seen(state, "u1", "5", (), 60)
    assert not needs_pass(state, "u1")
    asyncio.run(finetunejob_follow.sweep(state))  # nothing changed: nothing due
    assert not needs_pass(state, "u1")
    state.indexes = {
        **state.indexes,
        "sovai_policies": {"eu-only": [{"allowedRegions": ["eu-central-fra"]}]},
    }
    state.seen["u1"] = (state.seen["u1"][0], time.monotonic() + 60)
    with pytest.MonkeyPatch.context() as patch:
        passed: list[str] = []
        patch.setattr(finetunejob_follow, "follow", lambda state, uid, job: passed.append(uid))
        asyncio.run(finetunejob_follow.sweep(state))
    assert passed == ["u1"]


def deployment(version: str) -> dict[str, Any]:
    return {"metadata": {"name": "svc", "resourceVersion": version}, "status": {}}


def serving_pod(version: str) -> dict[str, Any]:
    return {"metadata": {"name": "svc-abc", "resourceVersion": version}, "status": {}}


MDEP = JobRef("team-a", "svc", "ModelDeployment", "team-a/ft")


@pytest.fixture
def mdep_state(state: OperatorState) -> OperatorState:
    state.indexes = {
        "sovai_deployments": {"m1": [deployment("10")]},
        "sovai_serving_pods": {"m1": [serving_pod("11")]},
        "sovai_finetunejobs": {"team-a/ft": [("u1", "Running")]},
    }
    state.jobs["m1"] = MDEP
    return state


def settle(state: OperatorState, wait: float = 60) -> None:
    """As a pass over m1 leaves it: what it saw, and when the safety net comes."""
    state.seen["m1"] = (
        modeldeployment._seen(state.indexes, "m1", MDEP.source),
        time.monotonic() + wait,
    )


def test_an_unchanged_deployment_needs_no_pass(mdep_state: OperatorState) -> None:
    assert modeldeployment.needs_pass(mdep_state, "m1", MDEP)  # never passed over
    settle(mdep_state)
    assert not modeldeployment.needs_pass(mdep_state, "m1", MDEP)
    settle(mdep_state, wait=-1)  # the safety net
    assert modeldeployment.needs_pass(mdep_state, "m1", MDEP)


@pytest.mark.parametrize(
    ("index", "key", "value"),
    [
        ("sovai_deployments", "m1", deployment("12")),  # the rollout moved
        ("sovai_serving_pods", "m1", serving_pod("13")),  # a pod changed
        ("sovai_finetunejobs", "team-a/ft", ("u1", "Succeeded")),  # its job succeeded
        ("sovai_finetunejobs", "team-a/ft", ("u2", "Queued")),  # made again, another uid
    ],
)
def test_what_a_deployment_serves_or_runs_changing_makes_it_due(
    mdep_state: OperatorState, index: str, key: str, value: Any
) -> None:
    settle(mdep_state)
    mdep_state.indexes[index][key] = [value]
    assert modeldeployment.needs_pass(mdep_state, "m1", MDEP)


def test_the_sweep_follows_each_kind_with_its_own_pass(
    mdep_state: OperatorState, monkeypatch: pytest.MonkeyPatch
) -> None:
    mdep_state.indexes = {**mdep_state.indexes, "sovai_rayjobs": {"u1": [rayjob("5")]}}
    mdep_state.jobs["u1"] = JobRef("team-a", "ft")
    passed: list[tuple[str, str]] = []
    monkeypatch.setattr(
        finetunejob_follow, "follow", lambda state, uid, job: passed.append(("job", uid))
    )
    monkeypatch.setattr(
        modeldeployment, "follow", lambda state, uid, job: passed.append(("deployment", uid))
    )
    assert asyncio.run(finetunejob_follow.sweep(mdep_state)) == 2
    assert sorted(passed) == [("deployment", "m1"), ("job", "u1")]
