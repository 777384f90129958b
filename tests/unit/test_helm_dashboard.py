"""The Grafana dashboard: the chart's ConfigMap, and every query checked against the series the
operator and the model server really expose (their registries, scraped in-process)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest
import yaml
from chart_render import CHART, KUBE_VERSION, of_kind, one, run_helm, template, template_error
from offline_state import offline_state
from prometheus_client import CollectorRegistry
from promql_check import check, exposed_series, label_values, silent_families
from starlette.types import Message

from sovereign_operator.api.v1alpha1.finetunejob import FineTuneJobPhase
from sovereign_training.serve.metrics import MetricsMiddleware, ServeMetrics

DASHBOARD_FILE = CHART / "dashboards" / "sovereign-ai-operator.json"
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# -- the series, from the code --------------------------------------------------------------


def operator_registry() -> CollectorRegistry:
    """The operator's registry after one reconcile pass that succeeded and one that raised,
    recorded by the handlers' own wrapper (OperatorState.measured)."""
    state = offline_state()
    with state.measured("FineTuneJob", "ftj-reconcile"):
        pass
    with pytest.raises(RuntimeError), state.measured("ModelDeployment", "mdep-reconcile"):
        raise RuntimeError("boom")
    state.metrics.phases.set("uid-1", FineTuneJobPhase.RUNNING.value)
    return state.metrics.registry


def serving_registry() -> CollectorRegistry:
    """The model server's registry after one request through its middleware, with tokens
    counted and the model loaded."""
    metrics = ServeMetrics()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    middleware = MetricsMiddleware(app, metrics)
    asyncio.run(middleware({"type": "http", "path": "/v1/completions"}, receive, send))
    metrics.count_tokens("/v1/completions", "prompt", 5)
    metrics.count_tokens("/v1/completions", "completion", 3)
    metrics.model_loaded.set(1)
    return metrics.registry


@cache
def registries() -> tuple[CollectorRegistry, CollectorRegistry]:
    return operator_registry(), serving_registry()


@cache
def series() -> dict[str, frozenset[str]]:
    return exposed_series(*registries())


def test_every_metric_is_exposed_with_its_labels() -> None:
    # A labelled metric never recorded exposes no sample, so its series and labels would be
    # invisible to the check: extend the exercise above when a metric is added.
    for registry in registries():
        assert silent_families(registry) == []
    # The exposition's suffixes, as Prometheus stores them.
    assert "sovai_reconcile_duration_seconds_bucket" in series()
    assert "le" in series()["sovai_serve_request_duration_seconds_bucket"]
    assert "sovai_serve_requests" not in series()  # a counter is only ever `_total`


# -- the queries ----------------------------------------------------------------------------

# Grafana's interval variables, replaced by a duration so the query parses.
GRAFANA_DURATIONS = ("__rate_interval", "__interval", "__range")
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
# Labels whose every value the exposition lists (the phase collector reports each phase, at
# zero too), so a literal value in a matcher can be checked as well.
CLOSED_LABELS = {("sovai_finetunejobs", "phase")}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def variables(dashboard: dict[str, Any]) -> set[str]:
    return {variable["name"] for variable in dashboard["templating"]["list"]}


def expand(expr: str, known: set[str]) -> tuple[str, list[str]]:
    """``expr`` with Grafana's variables replaced; the ones the dashboard does not define are
    problems. A dashboard variable only ever stands inside a label matcher's quotes."""
    problems: list[str] = []

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name in GRAFANA_DURATIONS:
            return "5m"
        if name not in known:
            problems.append(f"${name}: no such dashboard variable")
        return ".*"

    return VARIABLE.sub(value, expr), problems


def closed_value_problems(expr: str) -> list[str]:
    registry = registries()[0]
    problems = []
    for name, label in CLOSED_LABELS:
        pattern = rf'{name}\{{[^}}]*\b{label}\s*(?:=|!=|=~|!~)\s*"([^"]*)"'
        allowed = label_values(registry, name, label)
        for literal in re.findall(pattern, expr):
            unknown = sorted(set(literal.split("|")) - allowed)
            if unknown:
                problems.append(f"{name}{{{label}}}: no value {unknown} (has {sorted(allowed)})")
    return problems


def query_problems(expr: str, legend: str = "") -> list[str]:
    """Everything wrong with one panel query: Grafana variables, PromQL, series, labels,
    closed label values, and labels its legend names but its result lacks."""
    expanded, problems = expand(expr, variables(DASHBOARD))
    result, found = check(expanded, series())
    legend_labels = set(LEGEND_LABEL.findall(legend))
    if legend_labels - result:
        found.append(f"legend {legend!r}: the result has no {sorted(legend_labels - result)}")
    return problems + found + closed_value_problems(expr)


def targets() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{panel['title']}/{target['refId']}", target)
        for panel in panels(DASHBOARD)
        for target in panel.get("targets", [])
    ]


@pytest.mark.parametrize(
    "target", [target for _, target in targets()], ids=[where for where, _ in targets()]
)
def test_panel_queries_use_only_exposed_series_and_labels(target: dict[str, Any]) -> None:
    assert query_problems(target["expr"], target.get("legendFormat", "")) == []


def label_values_query(variable: dict[str, Any]) -> tuple[str, str]:
    query = variable["query"]
    text = query["query"] if isinstance(query, dict) else query
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text)
    assert match, f"{variable['name']}: not a label_values() query: {text}"
    assert variable["definition"] == text
    return match.group(1), match.group(2)


@pytest.mark.parametrize(
    "variable",
    [v for v in DASHBOARD["templating"]["list"] if v["type"] == "query"],
    ids=lambda v: str(v["name"]),
)
def test_variable_queries_use_only_exposed_series_and_labels(variable: dict[str, Any]) -> None:
    selector, label = label_values_query(variable)
    assert query_problems(f"count by ({label}) ({selector})") == []
    assert variable["datasource"] == DATASOURCE


@pytest.mark.parametrize(
    ("expr", "legend", "problem"),
    [
        ("sum(rate(sovai_reconcile_total[5m]))", "", "sovai_reconcile_total: no such series"),
        ("rate(sovai_serve_requests[5m])", "", "sovai_serve_requests: no such series"),
        ('sovai_serve_model_loaded{endpoint="/health"}', "", "no label ['endpoint']"),
        ("sum by (model) (rate(sovai_serve_tokens_total[5m]))", "", "no label ['model']"),
        (
            "histogram_quantile(0.9, sum by (kind) "
            "(rate(sovai_reconcile_duration_seconds_bucket[5m])))",
            "",
            "no label ['le']",
        ),
        (
            "sum by (kind) (rate(sovai_reconciles_total[5m]))",
            "{{kind}} {{handler}}",
            "the result has no ['handler']",
        ),
        (
            "sum by (kind) (rate(sovai_reconcile_errors_total[5m]))"
            " / sum by (handler) (rate(sovai_reconciles_total[5m]))",
            "",
            "no series would match",
        ),
        ("sum(rate(sovai_reconciles_total[5m])", "", "does not parse"),
        ('sovai_reconciles_total{kind=~"$nope"}', "", "$nope: no such dashboard variable"),
        ('sovai_finetunejobs{phase="Done"}', "", "no value ['Done']"),
    ],
    ids=[
        "typo",
        "counter-without-total",
        "label-not-on-metric",
        "by-unknown-label",
        "quantile-without-le",
        "legend-label-aggregated-away",
        "sides-never-match",
        "syntax",
        "unknown-variable",
        "unknown-phase",
    ],
)
def test_the_query_check_catches_mistakes(expr: str, legend: str, problem: str) -> None:
    problems = query_problems(expr, legend)
    assert any(problem in found for found in problems), problems


def test_the_phase_check_sees_every_phase() -> None:
    assert label_values(registries()[0], "sovai_finetunejobs", "phase") == {
        phase.value for phase in FineTuneJobPhase
    }


# -- the dashboard itself -------------------------------------------------------------------


def test_every_panel_queries_the_datasource_variable() -> None:
    datasource = DASHBOARD["templating"]["list"][0]
    assert (datasource["name"], datasource["type"], datasource["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    for panel in panels(DASHBOARD):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    ids = [panel["id"] for panel in panels(DASHBOARD)]
    assert len(ids) == len(set(ids))
    for panel in panels(DASHBOARD):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    # Provisioned from a ConfigMap: a fixed uid keeps links stable, and no database id.
    assert DASHBOARD["uid"] == "sovereign-ai-operator"
    assert "id" not in DASHBOARD


# -- the chart ------------------------------------------------------------------------------


def dashboard_values(**dashboard: Any) -> dict[str, Any]:
    metrics = VALUES["metrics"]
    return {"metrics": {**metrics, "dashboard": {**metrics["dashboard"], **dashboard}}}


def test_dashboard_is_off_by_default() -> None:
    assert VALUES["metrics"]["dashboard"]["enabled"] is False
    assert of_kind(template(), "ConfigMap") == []


def test_dashboard_configmap_carries_the_sidecar_label_and_the_file() -> None:
    configmap = one(template(dashboard_values(enabled=True)), "ConfigMap")
    metadata = configmap["metadata"]
    assert metadata["name"] == "rel-sovereign-ai-operator-dashboard"
    assert metadata["namespace"] == "sovai-system"
    assert metadata["labels"]["grafana_dashboard"] == "1"
    assert "annotations" not in metadata
    assert list(configmap["data"]) == ["sovereign-ai-operator.json"]
    text = configmap["data"]["sovereign-ai-operator.json"]
    assert json.loads(text) == DASHBOARD
    assert text.strip() == DASHBOARD_FILE.read_text().strip()


def test_dashboard_label_namespace_and_annotations_are_set_by_values() -> None:
    values = dashboard_values(
        enabled=True,
        namespace="monitoring",
        label="grafana.example.eu/dashboard",
        labelValue="sovereign-ai",
        annotations={"grafana_folder": "Sovereign AI"},
    )
    metadata = one(template(values), "ConfigMap")["metadata"]
    assert metadata["namespace"] == "monitoring"
    assert metadata["labels"]["grafana.example.eu/dashboard"] == "sovereign-ai"
    assert "grafana_dashboard" not in metadata["labels"]
    assert metadata["annotations"] == {"grafana_folder": "Sovereign AI"}


@pytest.mark.parametrize(
    ("dashboard", "message"),
    [
        ({"label": "not a label"}, "/metrics/dashboard/label"),
        ({"labelValue": "a b"}, "/metrics/dashboard/labelValue"),
        ({"namespace": "Monitoring"}, "/metrics/dashboard/namespace"),
        ({"folder": "x"}, "additional properties 'folder' not allowed"),
    ],
    ids=["label", "label-value", "namespace", "unknown-key"],
)
def test_schema_rejects_bad_dashboard_values(dashboard: dict[str, Any], message: str) -> None:
    assert message in template_error(dashboard_values(enabled=True, **dashboard))


def test_helm_lint_strict_with_dashboard() -> None:
    args = ["--set-json", f"metrics={json.dumps(dashboard_values(enabled=True)['metrics'])}"]
    result = run_helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *args)
    assert "0 chart(s) failed" in result.stdout
