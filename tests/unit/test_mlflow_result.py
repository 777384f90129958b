"""A job's result read from its MLflow run when the submitter's log gives none: the search, the
choice of run, and when the kuberay backend asks (at most every retry_after per job).

MLflow here is a stub of the REST client's three reads (no HTTP); the real server is in
tests/integration/test_finetunejob.py and the trainer's side in tests/training.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from test_backend_job_config import RESULT, FakeKube, context

from sovereign_operator.backends.kuberay import NO_TRACKING_SERVER, KubeRayBackend
from sovereign_operator.backends.mlflow_result import (
    KeptResult,
    find_kept_result,
    runs_of_job,
    search_body,
)
from sovereign_operator.builders.context import Owner
from sovereign_operator.k8s.client import ApiError, Kube
from sovereign_operator.mlflow_rest import MlflowError, MlflowRest

OWNER = Owner(name="ft", namespace="team-a", uid="0000-1111")
EXPERIMENT = "team-a/ft"  # experiment_name's default: <namespace>/<name>
LOOKED_FOR = (
    "MLflow at http://mlflow:5000 has no run in experiment 'team-a/ft' tagged "
    "sovai.job.uid=0000-1111 that kept a result (sovai/result.json)"
)


def run(run_id: str, uid: str = "0000-1111", namespace: str = "team-a", name: str = "ft") -> Any:
    tags = {"sovai.job.uid": uid, "sovai.job.namespace": namespace, "sovai.job.name": name}
    return {
        "info": {"run_id": run_id},
        "data": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }


def test_the_search_asks_for_the_jobs_runs_that_kept_a_result_newest_first() -> None:
    assert search_body("7", "0000-1111") == {
        "experiment_ids": ["7"],
        "filter": "tags.`sovai.job.uid` = '0000-1111' and tags.`sovai.result` = "
        "'sovai/result.json'",
        "order_by": ["attributes.start_time DESC"],
        "max_results": 10,
    }


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        ([run("new"), run("old")], ["new", "old"]),
        ([run("r", namespace="team-b")], []),  # another namespace's job of the same uid tag
        ([run("r", name="other")], []),
        ([run("r", uid="9999")], []),
        ([{"info": {}, "data": run("x")["data"]}, "junk"], []),
        ([], []),
    ],
    ids=["in-order", "other-namespace", "other-name", "other-uid", "malformed", "none"],
)
def test_only_runs_that_name_the_job_count(runs: list[Any], expected: list[str]) -> None:
    assert runs_of_job({"runs": runs}, OWNER) == expected


@dataclass(frozen=True)
class StubMlflow(MlflowRest):
    """The three reads, answered from memory; each call is counted."""

    runs: list[Any] = field(default_factory=list)
    artifacts: Mapping[str, bytes] = field(default_factory=dict)
    down: bool = False
    calls: list[str] = field(default_factory=list)

    def get(self, endpoint: str, params: Mapping[str, str], what: str) -> dict[str, Any] | None:
        self.calls.append(endpoint)
        if self.down:
            raise MlflowError(f"cannot reach {self.where} ({what}): connection refused")
        if params == {"experiment_name": EXPERIMENT}:
            return {"experiment": {"experiment_id": "7", "name": EXPERIMENT}}
        return None

    def post(self, endpoint: str, body: Mapping[str, Any], what: str) -> dict[str, Any]:
        self.calls.append(endpoint)
        assert body == search_body("7", OWNER.uid)
        return {"runs": self.runs}

    def artifact(self, run_id: str, path: str) -> bytes | None:
        self.calls.append(f"artifact {run_id} {path}")
        return self.artifacts.get(run_id)


BODY = json.dumps(RESULT, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("runs", "artifacts", "expected"),
    [
        ([run("r1")], {"r1": BODY}, KeptResult("r1", RESULT)),
        # The newest run whose artifact reads as a result document wins.
        ([run("r2"), run("r1")], {"r1": BODY, "r2": b"not json"}, KeptResult("r1", RESULT)),
        ([], {}, LOOKED_FOR),
        (
            [run("r1")],
            {"r1": b"[1, 2]"},
            "MLflow at http://mlflow:5000: the sovai/result.json of run(s) r1 is missing or "
            "not a result document",
        ),
    ],
    ids=["found", "newest-readable", "no-run", "not-a-document"],
)
def test_the_kept_result_is_read_like_the_logs_line(
    runs: list[Any], artifacts: dict[str, bytes], expected: KeptResult | str
) -> None:
    mlflow = StubMlflow("http://mlflow:5000", runs=runs, artifacts=artifacts)
    assert find_kept_result(mlflow, EXPERIMENT, OWNER) == expected


def test_no_experiment_of_that_name_is_no_run() -> None:
    mlflow = StubMlflow("http://mlflow:5000")
    other = Owner(name="gone", namespace="team-a", uid="0000-1111")
    assert find_kept_result(mlflow, "team-a/gone", other) == LOOKED_FOR.replace(
        "team-a/ft", "team-a/gone"
    )
    assert mlflow.calls == ["experiments/get-by-name"]


class KwokKube(FakeKube):
    """The RayJob comes back succeeded; its submitter's log cannot be read (kwok's pods have
    no kubelet to serve one)."""

    def log_tail(self, namespace: str, pod: str, container: str, lines: int, limit: int) -> str:
        raise ApiError(400, "BadRequest", '{"message": "no kubelet"}')


def backend(mlflow: MlflowRest | None, retry_after: float = 30.0) -> KubeRayBackend:
    return KubeRayBackend(cast(Kube, KwokKube()), retry_after=retry_after, mlflow=mlflow)


def test_a_result_the_log_does_not_give_is_read_from_the_jobs_mlflow_run() -> None:
    mlflow = StubMlflow("http://mlflow:5000", runs=[run("r1")], artifacts={"r1": BODY})
    observation = backend(mlflow).reconcile(context("kuberay", None))
    assert observation.result == RESULT
    assert observation.result_from == "MLflow run r1"
    assert observation.result_tried is None


def test_mlflow_is_asked_at_most_every_retry_after_per_job() -> None:
    mlflow = StubMlflow("http://mlflow:5000")
    kuberay = backend(mlflow)
    first = kuberay.reconcile(context("kuberay", None))
    assert (first.result, first.result_from, first.result_tried) == (None, None, LOOKED_FOR)
    asked = list(mlflow.calls)
    assert asked == ["experiments/get-by-name", "runs/search"]
    # The next pass, within retry_after: not asked again; the last look's finding stands.
    again = kuberay.reconcile(context("kuberay", None))
    assert again.result_tried == LOOKED_FOR
    assert mlflow.calls == asked
    # Past retry_after (0 here): asked again.
    eager = backend(mlflow, retry_after=0)
    eager.reconcile(context("kuberay", None))
    eager.reconcile(context("kuberay", None))
    assert mlflow.calls == asked * 3


def test_an_mlflow_that_cannot_be_read_is_named() -> None:
    mlflow = StubMlflow("http://user:pw@mlflow:5000", down=True)
    observation = backend(mlflow).reconcile(context("kuberay", None))
    assert observation.result is None
    assert observation.result_tried == (
        "cannot reach MLflow at http://mlflow:5000 (experiment 'team-a/ft'): connection refused"
    )


def test_without_a_tracking_server_nothing_is_asked() -> None:
    observation = backend(None).reconcile(context("kuberay", None))
    assert (observation.result, observation.result_tried) == (None, NO_TRACKING_SERVER)


def test_the_client_keeps_credentials_out_of_its_repr_and_refuses_what_is_not_http() -> None:
    env = {"MLFLOW_TRACKING_TOKEN": "s3cr3t", "MLFLOW_TRACKING_PASSWORD": "pw"}
    mlflow = MlflowRest.from_environment("https://mlflow.eu:443", env)
    assert mlflow.token == "s3cr3t"
    assert "s3cr3t" not in repr(mlflow)
    assert "pw" not in repr(mlflow)
    with pytest.raises(ValueError, match="only http"):
        MlflowRest.from_environment("sqlite:///mlflow.db", env)
