"""Settings come from SOVAI_* variables; Kopf's settings follow from them."""

from __future__ import annotations

import os
import subprocess
import sys

import kopf
import pytest
from pydantic import ValidationError

from sovereign_operator.api.v1alpha1.common import FINALIZER, GROUP
from sovereign_operator.builders.context import JOB_UID_LABEL, MANAGED_BY, MANAGED_BY_LABEL
from sovereign_operator.builders.serving import DEPLOYMENT_UID_LABEL
from sovereign_operator.config import Settings, describe_errors
from sovereign_operator.k8s.client import load_configuration
from sovereign_operator.kopf_tuning import (
    CLUSTER_WATCHES,
    KOPF_WATCHES,
    NAMESPACED_WATCHES,
    PATCH_CONNECTIONS,
    DigestDiffBase,
    connection_limit,
)
from sovereign_operator.main import build_config, configure_kopf, register


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVAI_RUNTIME_IMAGE", "registry.eu/training:2")
    monkeypatch.setenv("SOVAI_NAMESPACES", "team-a, team-b,")
    monkeypatch.setenv("SOVAI_MLFLOW_TRACKING_URI", "http://mlflow.eu:5000")
    monkeypatch.setenv("SOVAI_REPLICAS", "2")
    monkeypatch.setenv("SOVAI_STARTUP_DEADLINE_SECONDS", "45")
    settings = Settings()
    assert settings.runtime_image == "registry.eu/training:2"
    assert settings.namespaces == ["team-a", "team-b"]
    assert settings.mlflow_tracking_uri == "http://mlflow.eu:5000"
    assert settings.startup_deadline_seconds == 45
    assert build_config(settings).runtime_image == "registry.eu/training:2"


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVAI_METRICS_PORT", "70000")
    monkeypatch.setenv("SOVAI_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert describe_errors(raised.value) == (
        "SOVAI_METRICS_PORT: Input should be less than or equal to 65535 (got '70000'); "
        "SOVAI_LOG_FORMAT: String should match pattern '^(json|text)$' (got 'xml')"
    )


def test_operator_refuses_bad_settings_before_starting() -> None:
    environ = {**os.environ, "SOVAI_REPLICAS": "zero"}
    done = subprocess.run(
        [sys.executable, "-m", "sovereign_operator"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "invalid settings: SOVAI_REPLICAS: Input should be a valid integer" in done.stderr


def test_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVAI_REPLICAS", "5")
    monkeypatch.setenv("SOVAI_POST_EVENTS", "false")
    settings = Settings(replicas=2)
    assert (settings.replicas, settings.post_events) == (2, False)


@pytest.mark.parametrize(("replicas", "standalone"), [(1, True), (3, False)])
def test_kopf_settings(replicas: int, standalone: bool) -> None:
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(kopf_settings, Settings(replicas=replicas, post_events=False))
    assert kopf_settings.persistence.finalizer == FINALIZER == "sovereign-ai.eu/finalizer"
    assert isinstance(kopf_settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert kopf_settings.peering.standalone is standalone
    assert kopf_settings.posting.enabled is False
    # Server-side filtering: only what the operator made. Pods of both kinds carry managed-by.
    selectors = kopf_settings.watching.label_selectors
    assert selectors["", "v1", "pods"] == f"{MANAGED_BY_LABEL}={MANAGED_BY}"
    assert selectors["ray.io", "v1", "rayjobs"] == JOB_UID_LABEL
    assert selectors["apps", "v1", "deployments"] == DEPLOYMENT_UID_LABEL
    diffbase = kopf_settings.persistence.diffbase_storage
    assert isinstance(diffbase, DigestDiffBase)
    assert diffbase.field == ("status", "lastHandledConfiguration")
    assert kopf_settings.queueing.idle_timeout < 1


def test_kopfs_connections_leave_room_for_every_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kind a handler is registered for is one watch stream per watched namespace (or
    one cluster-wide): the pool leaves room for all of them and for Kopf's patches."""
    monkeypatch.setenv("SOVAI_RUNTIME_IMAGE", "registry.eu/training:2")
    registry = kopf.OperatorRegistry()
    register(registry, Settings(), load_configuration)
    selectors = [
        handler.selector
        for kinds in (registry._indexing, registry._changing)
        for handler in kinds.get_all_handlers()
    ]
    watched = {(s.group, s.plural or s.any_name) for s in selectors if s is not None}
    cluster_wide = {("", "nodes"), ("", "namespaces"), (GROUP, "sovereigntypolicies")}
    assert cluster_wide <= watched
    assert len(watched - cluster_wide) == NAMESPACED_WATCHES
    assert len(cluster_wide) == CLUSTER_WATCHES
    for namespaces in (0, 1, 10):
        streams = NAMESPACED_WATCHES * max(1, namespaces) + CLUSTER_WATCHES + KOPF_WATCHES
        assert connection_limit(namespaces) == streams + PATCH_CONNECTIONS
