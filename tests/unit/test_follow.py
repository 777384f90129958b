"""The follow-up sweep passes over the jobs whose children changed or whose deadline came,
and only those (pure selection logic; the passes themselves are integration-tested)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from offline_runtime import offline_runtime

from sovereign_operator.backends.pods import PodFacts
from sovereign_operator.handlers import finetunejob_follow
from sovereign_operator.handlers.finetunejob import needs_pass
from sovereign_operator.handlers.runtime import JobRef, Runtime


def rayjob(version: str) -> dict[str, Any]:
    return {"metadata": {"name": "ft", "resourceVersion": version}, "status": {}}


@pytest.fixture
def rt() -> Runtime:
    runtime = offline_runtime()  # selection does no I/O
    runtime.indexes = {"sovai_rayjobs": {"u1": [rayjob("5")]}, "sovai_pods": {}}
    return runtime


def seen(rt: Runtime, uid: str, version: str, pods: tuple[PodFacts, ...], wait: float) -> None:
    rt.seen[uid] = ((version, pods), time.monotonic() + wait)


def test_a_job_never_passed_over_needs_a_pass(rt: Runtime) -> None:
    assert needs_pass(rt, "u1")


def test_nothing_changed_and_no_deadline_means_no_pass(rt: Runtime) -> None:
    seen(rt, "u1", "5", (), 60)
    assert not needs_pass(rt, "u1")


def test_a_changed_rayjob_needs_a_pass(rt: Runtime) -> None:
    seen(rt, "u1", "5", (), 60)
    rt.indexes["sovai_rayjobs"]["u1"] = [rayjob("6")]
    assert needs_pass(rt, "u1")


def test_a_changed_pod_needs_a_pass(rt: Runtime) -> None:
    seen(rt, "u1", "5", (), 60)
    rt.indexes["sovai_pods"]["u1"] = [PodFacts("ft-head", "team-a", "node-1", "Pending")]
    assert needs_pass(rt, "u1")


def test_a_deadline_reached_needs_a_pass(rt: Runtime) -> None:
    seen(rt, "u1", "5", (), -1)
    assert needs_pass(rt, "u1")


def test_the_sweep_follows_only_due_jobs_and_survives_a_failing_one(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rt.indexes["sovai_rayjobs"].update({"u2": [rayjob("7")], "u3": [rayjob("8")]})
    seen(rt, "u1", "5", (), 60)  # unchanged: skipped
    seen(rt, "u2", "6", (), 60)  # its RayJob moved on: due
    rt.jobs.update({u: JobRef("team-a", f"job-{u}") for u in ("u1", "u2", "u3")})  # u3: new
    followed: list[str] = []

    def follow(runtime: Runtime, uid: str, job: JobRef) -> None:
        followed.append(uid)
        if uid == "u3":
            raise RuntimeError("API server unavailable")

    monkeypatch.setattr(finetunejob_follow, "follow", follow)
    assert asyncio.run(finetunejob_follow.sweep(rt)) == 2
    assert sorted(followed) == ["u2", "u3"]
    assert "follow-up of FineTuneJob team-a/job-u3 failed" in caplog.text


def test_a_changed_policy_makes_every_job_due(rt: Runtime) -> None:
    rt.indexes = {
        **rt.indexes,
        "sovai_policies": {"eu-only": [{"allowedRegions": ["eu-west-par"]}]},
    }
    rt.jobs["u1"] = JobRef("team-a", "ft")
    asyncio.run(finetunejob_follow.sweep(rt))  # the first sweep learns the policies
    seen(rt, "u1", "5", (), 60)
    assert not needs_pass(rt, "u1")
    asyncio.run(finetunejob_follow.sweep(rt))  # nothing changed: nothing due
    assert not needs_pass(rt, "u1")
    rt.indexes = {
        **rt.indexes,
        "sovai_policies": {"eu-only": [{"allowedRegions": ["eu-central-fra"]}]},
    }
    rt.seen["u1"] = (rt.seen["u1"][0], time.monotonic() + 60)
    with pytest.MonkeyPatch.context() as patch:
        passed: list[str] = []
        patch.setattr(finetunejob_follow, "follow", lambda rt, uid, job: passed.append(uid))
        asyncio.run(finetunejob_follow.sweep(rt))
    assert passed == ["u1"]
