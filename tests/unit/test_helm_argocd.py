"""Argo CD: the Lua health scripts under Lua 5.1 (lupa), argocd-cm.yaml, the example Application."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sovereign_operator.api.v1alpha1.finetunejob import FineTuneJobPhase
from sovereign_operator.api.v1alpha1.modeldeployment import ModelDeploymentPhase

try:  # Argo CD embeds gopher-lua, a Lua 5.1 runtime; run the scripts under the same language.
    from lupa.lua51 import LuaRuntime
except ImportError:  # pragma: no cover - lupa builds without a bundled 5.1
    from lupa import LuaRuntime

ARGOCD = Path(__file__).resolve().parents[2] / "charts" / "sovereign-ai-operator" / "argocd"
FTJ_KEY = "resource.customizations.health.sovereign-ai.eu_FineTuneJob"
MDEP_KEY = "resource.customizations.health.sovereign-ai.eu_ModelDeployment"


def health(script: str, obj: dict[str, Any]) -> tuple[str, str]:
    """Run an Argo CD health script with `obj` as its global, as Argo CD does."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    assert "5.1" in lua.eval("_VERSION")
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    return str(result["status"]), str(result["message"])


def ftj(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "sovereign-ai.eu/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "j", "namespace": "ml", "generation": generation},
        "spec": {},
    }
    if status is not None:
        obj["status"] = status
    return obj


def cond(kind: str, status: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": status, "reason": kind, "message": message}


FTJ_CASES: list[tuple[str, dict[str, Any] | None, str, str]] = [
    ("no-status", None, "Progressing", "Waiting for the operator to pick up the job"),
    ("Pending", {"phase": "Pending", "observedGeneration": 1}, "Progressing", "Pending"),
    ("Validating", {"phase": "Validating", "observedGeneration": 1}, "Progressing", "Validating"),
    ("Queued", {"phase": "Queued", "observedGeneration": 1}, "Progressing", "Queued"),
    (
        "Running",
        {"phase": "Running", "observedGeneration": 1, "progress": {"step": 5, "percentage": 42}},
        "Progressing",
        "Running: 42%",
    ),
    (
        "Succeeded",
        {"phase": "Succeeded", "observedGeneration": 1, "fineTunedModel": "ft:mistral:support-v1"},
        "Healthy",
        "Fine-tuned model ft:mistral:support-v1",
    ),
    (
        "Failed",
        {
            "phase": "Failed",
            "observedGeneration": 1,
            "error": {"code": "ImagePullFailed", "message": "image registry.eu/x:1 not found"},
            "conditions": [cond("Failed", "True", "other text")],
        },
        "Degraded",
        "Failed: image registry.eu/x:1 not found",
    ),
    (
        "Cancelled",
        {
            "phase": "Cancelled",
            "observedGeneration": 1,
            "conditions": [cond("Succeeded", "False", "deleted by the user")],
        },
        "Degraded",
        "Cancelled: deleted by the user",
    ),
    (
        "Suspended",
        {
            "phase": "Suspended",
            "observedGeneration": 1,
            "conditions": [cond("Suspended", "True", "spec.suspend is true; RayJob suspended")],
        },
        "Suspended",
        "spec.suspend is true; RayJob suspended",
    ),
]


@pytest.mark.parametrize(
    ("status", "expected", "message"),
    [case[1:] for case in FTJ_CASES],
    ids=[case[0] for case in FTJ_CASES],
)
def test_finetunejob_health(status: dict[str, Any] | None, expected: str, message: str) -> None:
    script = (ARGOCD / "health-finetunejob.lua").read_text()
    assert health(script, ftj(status)) == (expected, message)


def test_finetunejob_cases_cover_every_phase() -> None:
    covered = {case[0] for case in FTJ_CASES}
    assert {phase.value for phase in FineTuneJobPhase} <= covered


def test_finetunejob_stale_status_is_progressing() -> None:
    # A spec edit the operator has not seen yet must not keep reporting the old health.
    script = (ARGOCD / "health-finetunejob.lua").read_text()
    stale = {"phase": "Succeeded", "observedGeneration": 1}
    assert health(script, ftj(stale, generation=2)) == (
        "Progressing",
        "Waiting for the operator to observe generation 2",
    )


def test_unknown_phase_is_unknown() -> None:
    script = (ARGOCD / "health-finetunejob.lua").read_text()
    assert health(script, ftj({"phase": "Exploded"}))[0] == "Unknown"


def mdep(status: dict[str, Any] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "ml", "generation": 3},
    }
    if status is not None:
        obj["status"] = {"observedGeneration": 3, **status}
    return obj


MDEP_CASES: list[tuple[str, dict[str, Any] | None, str, str]] = [
    ("no-status", None, "Progressing", "Waiting for the operator to pick up the deployment"),
    ("Pending", {"phase": "Pending"}, "Progressing", "Pending"),
    (
        "Deploying",
        {"phase": "Deploying", "conditions": [cond("Progressing", "True", "1/2 replicas ready")]},
        "Progressing",
        "1/2 replicas ready",
    ),
    (
        "Ready",
        {"phase": "Ready", "url": "http://m.ml.svc:8000/v1", "readyReplicas": 2},
        "Healthy",
        "Serving at http://m.ml.svc:8000/v1",
    ),
    (
        "Degraded",
        {"phase": "Degraded", "conditions": [cond("Ready", "False", "1/2 replicas ready")]},
        "Degraded",
        "Degraded: 1/2 replicas ready",
    ),
    (
        "Failed",
        {"phase": "Failed", "conditions": [cond("Ready", "False", "model not allowed")]},
        "Degraded",
        "Failed: model not allowed",
    ),
    ("Suspended", {"phase": "Suspended"}, "Suspended", "Suspended (spec.suspend is true)"),
]


@pytest.mark.parametrize(
    ("status", "expected", "message"),
    [case[1:] for case in MDEP_CASES],
    ids=[case[0] for case in MDEP_CASES],
)
def test_modeldeployment_health(status: dict[str, Any] | None, expected: str, message: str) -> None:
    script = (ARGOCD / "health-modeldeployment.lua").read_text()
    assert health(script, mdep(status)) == (expected, message)


def test_modeldeployment_cases_cover_every_phase() -> None:
    covered = {case[0] for case in MDEP_CASES}
    assert {phase.value for phase in ModelDeploymentPhase} <= covered


def test_argocd_cm_holds_exactly_the_scripts() -> None:
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert cm["data"][FTJ_KEY] == (ARGOCD / "health-finetunejob.lua").read_text()
    assert cm["data"][MDEP_KEY] == (ARGOCD / "health-modeldeployment.lua").read_text()
    for kind in ("FineTuneJob", "ModelDeployment"):
        ignore = yaml.safe_load(
            cm["data"][f"resource.customizations.ignoreDifferences.sovereign-ai.eu_{kind}"]
        )
        assert ignore["jsonPointers"] == ["/status"]


def test_example_application_orders_operator_before_workloads() -> None:
    apps = list(yaml.safe_load_all((ARGOCD / "application.yaml").read_text()))
    waves = {a["metadata"]["name"]: int(a["metadata"]["annotations"][WAVE]) for a in apps}
    assert waves["sovereign-ai-operator"] < waves["sovereign-ai-workloads"]
    operator_app = next(a for a in apps if a["metadata"]["name"] == "sovereign-ai-operator")
    assert operator_app["spec"]["source"]["path"] == "charts/sovereign-ai-operator"
    # Under Argo CD the policy is a wave, not a hook (hooks would run after the workloads).
    assert operator_app["spec"]["source"]["helm"]["valuesObject"]["sovereigntyPolicy"] == {
        "asHook": False
    }


WAVE = "argocd.argoproj.io/sync-wave"
