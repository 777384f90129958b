"""The rayCluster backend's retries and token: which submission is current, and a token read
once per TOKEN_TTL_SECONDS or when the dashboard refuses it."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from sovereign_operator.api.v1alpha1.sovereigntypolicy import RayClusterEndpoint
from sovereign_operator.backends import raycluster
from sovereign_operator.backends.jobsapi import JobsApi, JobsApiError
from sovereign_operator.backends.raycluster import RayClusterBackend, attempt_of, run_submission_id

UID = "0000-1111"


@pytest.mark.parametrize(
    ("current", "attempt"),
    [
        (None, 0),
        ("sovai-0000-1111-2", 0),
        ("sovai-0000-1111-2-r1", 1),
        ("sovai-0000-1111-2-r10", 10),
        ("sovai-0000-1111-1-r3", 0),  # another generation: a resume starts again
    ],
)
def test_the_current_attempt_is_read_from_the_recorded_submission(
    current: str | None, attempt: int
) -> None:
    assert attempt_of(UID, 2, current) == attempt
    assert attempt_of(UID, 2, run_submission_id(UID, 2, attempt)) == attempt


class Secrets:
    """A Kube stand-in that serves one token Secret and counts its reads."""

    def __init__(self) -> None:
        self.token = "first"
        self.reads = 0

    def get(self, kind: Any, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1
        return {"data": {"token": base64.b64encode(self.token.encode()).decode()}}


ENDPOINT = RayClusterEndpoint.model_validate(
    {
        "name": "eu",
        "address": "http://ray-head.ray.svc:8265",
        "region": "eu-west-par",
        "authTokenSecretRef": {"namespace": "ray", "name": "ray-token", "key": "token"},
    }
)


def backend(secrets: Secrets) -> RayClusterBackend:
    return RayClusterBackend(secrets, "python -m sovereign_training train", None, True)  # type: ignore[arg-type]  # a stand-in for Kube's one read


def test_the_token_is_read_once_per_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = Secrets()
    ray = backend(secrets)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    tokens = [ray.calling(ENDPOINT, lambda api: api.token) for _ in range(5)]
    assert tokens == ["first"] * 5
    assert secrets.reads == 1
    clock[0] += raycluster.TOKEN_TTL_SECONDS + 1
    secrets.token = "second"
    assert ray.calling(ENDPOINT, lambda api: api.token) == "second"
    assert secrets.reads == 2


def test_a_refused_token_is_read_again_once() -> None:
    secrets = Secrets()
    ray = backend(secrets)
    assert ray.calling(ENDPOINT, lambda api: api.token) == "first"
    secrets.token = "rotated"

    def call(api: JobsApi) -> str:
        if api.token != "rotated":
            raise JobsApiError("HTTP 401 (token missing or wrong)", 401)
        return "answered"

    assert ray.calling(ENDPOINT, call) == "answered"
    assert secrets.reads == 2

    def always_refused(api: JobsApi) -> str:
        raise JobsApiError("HTTP 403 (token missing or wrong)", 403)

    with pytest.raises(JobsApiError):
        ray.calling(ENDPOINT, always_refused)
    assert secrets.reads == 3
