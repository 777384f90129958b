"""Argo CD: the health scripts in Argo CD's own layout (sovereign-ai.eu/<Kind>/health.lua,
health_test.yaml, testdata/), every case run under gopher-lua with Argo CD's rules
(hack/go/argocd-health) and under Lua 5.1 (lupa); argocd-cm.yaml; the example Application."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_render import required_tool

from sovereign_operator.api.v1alpha1.finetunejob import FineTuneJob, FineTuneJobPhase
from sovereign_operator.api.v1alpha1.modeldeployment import ModelDeployment, ModelDeploymentPhase

try:  # Argo CD embeds gopher-lua, a Lua 5.1 runtime; run the scripts under the same language.
    from lupa.lua51 import LuaRuntime
except ImportError:  # pragma: no cover - lupa builds without a bundled 5.1
    from lupa import LuaRuntime

ARGOCD = Path(__file__).resolve().parents[2] / "charts" / "sovereign-ai-operator" / "argocd"
GROUP = ARGOCD / "sovereign-ai.eu"
MODELS: dict[str, type[FineTuneJob] | type[ModelDeployment]] = {
    "FineTuneJob": FineTuneJob,
    "ModelDeployment": ModelDeployment,
}
PHASES: dict[str, set[str]] = {
    "FineTuneJob": {phase.value for phase in FineTuneJobPhase},
    "ModelDeployment": {phase.value for phase in ModelDeploymentPhase},
}
VALID_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def health_tests(kind: str) -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = load(GROUP / kind / "health_test.yaml")["tests"]
    return tests


# (kind, inputPath, expected {status, message}) for every case of every health_test.yaml.
CASES = [
    (kind, test["inputPath"], test["healthStatus"])
    for kind in MODELS
    for test in health_tests(kind)
]
CASE_IDS = [f"{kind}/{path}" for kind, path, _ in CASES]


def lupa_health(script: str, obj: dict[str, Any]) -> tuple[str, str]:
    """Run a health script with `obj` as its global under lupa's Lua 5.1 (every library open)."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    assert "5.1" in lua.eval("_VERSION")
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    return str(result["status"]), str(result["message"])


def runner() -> Path:
    """The gopher-lua runner (hack/go/argocd-health)."""
    return required_tool("argocd-health")


def run_runner(*folders: Path) -> tuple[int, list[dict[str, Any]], str]:
    """Exit status, one result per case, and stderr of the runner on `folders`."""
    done = subprocess.run(
        [str(runner()), *map(str, folders)], capture_output=True, text=True, timeout=60, check=False
    )
    results = [json.loads(line) for line in done.stdout.splitlines()]
    return done.returncode, results, done.stderr


@functools.cache
def gopher_results() -> dict[tuple[str, str], dict[str, Any]]:
    """Every case of the chart's scripts under the runner, by (kind, inputPath): one run."""
    status, results, stderr = run_runner(*(GROUP / kind for kind in MODELS))
    assert status in (0, 1), stderr  # 2: a folder could not be read
    return {(Path(r["dir"]).name, r["inputPath"]): r for r in results}


@pytest.mark.parametrize(("kind", "input_path", "expected"), CASES, ids=CASE_IDS)
def test_case_under_gopher_lua(kind: str, input_path: str, expected: dict[str, str]) -> None:
    result = gopher_results()[(kind, input_path)]
    assert result.get("error") is None, result["error"]
    assert result["actual"] == expected
    assert result["pass"] is True


@pytest.mark.parametrize(("kind", "input_path", "expected"), CASES, ids=CASE_IDS)
def test_case_under_lupa(kind: str, input_path: str, expected: dict[str, str]) -> None:
    script = (GROUP / kind / "health.lua").read_text()
    obj = load(GROUP / kind / input_path)
    assert lupa_health(script, obj) == (expected["status"], expected["message"])


def test_runner_passes_every_case_and_only_those() -> None:
    status, results, stderr = run_runner(*(GROUP / kind for kind in MODELS))
    assert status == 0, stderr
    assert sorted((Path(r["dir"]).name, r["inputPath"]) for r in results) == sorted(
        (kind, path) for kind, path, _ in CASES
    )


@pytest.mark.parametrize("kind", MODELS)
def test_health_tests_use_argocds_format(kind: str) -> None:
    folder = GROUP / kind
    tests = health_tests(kind)
    for test in tests:
        assert set(test) == {"healthStatus", "inputPath"}
        assert set(test["healthStatus"]) == {"status", "message"}
        assert test["healthStatus"]["status"] in VALID_STATUSES
        assert test["inputPath"].startswith("testdata/")
    # Every testdata object is a case, and every case's object exists.
    on_disk = {f"testdata/{p.name}" for p in (folder / "testdata").glob("*.yaml")}
    assert {test["inputPath"] for test in tests} == on_disk
    assert len(tests) == len(on_disk)


def phase(kind: str, input_path: str) -> str | None:
    status: dict[str, Any] = load(GROUP / kind / input_path).get("status") or {}
    return status.get("phase")


@pytest.mark.parametrize("kind", MODELS)
def test_testdata_cover_every_phase(kind: str) -> None:
    phases = {phase(kind, path) for case_kind, path, _ in CASES if case_kind == kind}
    assert PHASES[kind] <= phases, f"phases without a testdata case: {PHASES[kind] - phases}"


# The objects the API can hold: all but the cases of a phase outside it (the Unknown branch).
API_CASES = [(k, p) for k, p, _ in CASES if phase(k, p) in PHASES[k] | {None}]


@pytest.mark.parametrize(("kind", "input_path"), API_CASES, ids=[f"{k}/{p}" for k, p in API_CASES])
def test_testdata_are_objects_of_the_api(kind: str, input_path: str) -> None:
    obj = load(GROUP / kind / input_path)
    assert (obj["apiVersion"], obj["kind"]) == ("sovereign-ai.eu/v1alpha1", kind)
    MODELS[kind].model_validate(obj)


# Argo CD runs a health script from argocd-cm with only the base, table and package libraries
# (and a safe os). Each of these works in lupa, so the runner must be what refuses it.
NOT_IN_ARGOCD = [
    ("string.lower(obj.kind)", "finetunejob"),
    ("obj.kind:upper()", "FINETUNEJOB"),
    ('("%d%%"):format(42)', "42%"),
    ("tostring(math.floor(4.2))", "4"),
]


def case_folder(folder: Path, message_expr: str, status: str = '"Healthy"') -> Path:
    """A one-case folder in Argo CD's layout, on a real FineTuneJob, whose script returns
    `status` and `message_expr`."""
    (folder / "testdata").mkdir()
    shutil.copy(
        GROUP / "FineTuneJob" / "testdata" / "progressing_running.yaml", folder / "testdata"
    )
    (folder / "health.lua").write_text(
        f"local hs = {{}}\nhs.status = {status}\nhs.message = {message_expr}\nreturn hs\n"
    )
    return folder


def write_case(folder: Path, expected: dict[str, str]) -> None:
    case = {"healthStatus": expected, "inputPath": "testdata/progressing_running.yaml"}
    (folder / "health_test.yaml").write_text(yaml.safe_dump({"tests": [case]}))


@pytest.mark.parametrize(("expr", "value"), NOT_IN_ARGOCD, ids=[e for e, _ in NOT_IN_ARGOCD])
def test_runner_lacks_the_string_and_math_libraries(tmp_path: Path, expr: str, value: str) -> None:
    folder = case_folder(tmp_path, expr)
    expected = {"status": "Healthy", "message": value}
    write_case(folder, expected)
    obj = load(folder / "testdata" / "progressing_running.yaml")
    assert lupa_health((folder / "health.lua").read_text(), obj) == ("Healthy", value)
    status, [result], stderr = run_runner(folder)
    assert status == 1
    assert result["pass"] is False
    assert result["actual"] is None
    assert "attempt to index a non-table object" in result["error"]
    assert "FAIL" in stderr


def test_runner_offers_the_base_and_table_libraries(tmp_path: Path) -> None:
    # The same harness passes a script that keeps to Argo CD's libraries.
    expr = 'table.concat({obj.kind, tostring(#obj.status.conditions), type(pairs)}, "/")'
    folder = case_folder(tmp_path, expr)
    write_case(folder, {"status": "Healthy", "message": "FineTuneJob/4/function"})
    status, [result], stderr = run_runner(folder)
    assert status == 0, stderr
    assert result["actual"] == {"status": "Healthy", "message": "FineTuneJob/4/function"}


def test_runner_turns_an_invalid_status_into_unknown(tmp_path: Path) -> None:
    # As Argo CD does with a status outside its list.
    folder = case_folder(tmp_path, '"fine"', status='"Fine"')
    expected = {"status": "Unknown", "message": "Lua returned an invalid health status"}
    write_case(folder, expected)
    status, [result], stderr = run_runner(folder)
    assert status == 0, stderr
    assert result["actual"] == expected


def test_argocd_cm_holds_exactly_the_scripts() -> None:
    cm = load(ARGOCD / "argocd-cm.yaml")
    for kind in MODELS:
        key = f"resource.customizations.health.sovereign-ai.eu_{kind}"
        assert cm["data"][key] == (GROUP / kind / "health.lua").read_text()
        ignore = yaml.safe_load(
            cm["data"][f"resource.customizations.ignoreDifferences.sovereign-ai.eu_{kind}"]
        )
        assert ignore["jsonPointers"] == ["/status"]
    # Without useOpenLibs Argo CD runs the scripts with only its libraries: the runner's rules.
    assert not [k for k in cm["data"] if k.startswith("resource.customizations.useOpenLibs")]


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
