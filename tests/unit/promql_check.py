"""PromQL checked against the series that Prometheus registries really expose.

`exposed_series` reads a registry's text exposition, as Prometheus scrapes it: counters as
`<name>_total`, histograms as `<name>_bucket` (with `le`), `_sum` and `_count`, and the
`_created` series of both. `check` parses an expression with promql-parser (a real PromQL
parser, so a syntax error is caught too) and follows the label names through selectors,
functions, aggregations and binary operators: every selector must name an exposed series,
and every label that a matcher, `by`/`without`, `on`/`ignoring` or `group_left` names must be
on the series at that point of the expression.
"""

from __future__ import annotations

from collections.abc import Mapping

import promql_parser as pq
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

Series = Mapping[str, frozenset[str]]

# Labels that Prometheus attaches at scrape time, not the exporter: job and instance on every
# target, namespace and pod from Kubernetes service discovery (ServiceMonitor, PodMonitor).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod"})

# Functions that write label names; the check does not follow them, so it refuses them rather
# than guess.
_LABEL_WRITERS = frozenset({"label_replace", "label_join"})
# Aggregations that return whole input series, not one series per group.
_SERIES_SELECTORS = frozenset({"topk", "bottomk", "limitk", "limit_ratio"})


def _families(registry: CollectorRegistry) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """The registry's exposition, parsed back: family name -> [(series name, labels)]."""
    text = generate_latest(registry).decode()
    return {
        family.name: [(sample.name, dict(sample.labels)) for sample in family.samples]
        for family in text_string_to_metric_families(text)
    }


def exposed_series(*registries: CollectorRegistry) -> dict[str, frozenset[str]]:
    """Each series name in the registries' exposition, with the label names it carries."""
    found: dict[str, set[str]] = {}
    for registry in registries:
        for samples in _families(registry).values():
            for name, labels in samples:
                found.setdefault(name, set()).update(labels)
    return {name: frozenset(labels) for name, labels in found.items()}


def silent_families(registry: CollectorRegistry) -> list[str]:
    """Metrics the registry declares but exposes no sample of (a labelled metric never
    recorded): `exposed_series` cannot see their series or labels."""
    return [family for family, samples in _families(registry).items() if not samples]


def label_values(registry: CollectorRegistry, series: str, label: str) -> set[str]:
    """The values `label` takes on `series` in the registry's exposition."""
    return {
        labels[label]
        for samples in _families(registry).values()
        for name, labels in samples
        if name == series and label in labels
    }


def _is_scalar(node: pq.Expr) -> bool:
    if isinstance(node, pq.NumberLiteral):
        return True
    if isinstance(node, pq.ParenExpr | pq.UnaryExpr):
        return _is_scalar(node.expr)
    if isinstance(node, pq.Call):
        return bool(node.func.return_type == pq.ValueType.Scalar)
    if isinstance(node, pq.BinaryExpr):
        return _is_scalar(node.lhs) and _is_scalar(node.rhs)
    return False


class _Checker:
    def __init__(self, series: Series, target_labels: frozenset[str]) -> None:
        self.series = series
        self.target_labels = target_labels
        self.problems: list[str] = []

    def missing(self, where: str, wanted: list[str], present: frozenset[str]) -> None:
        absent = sorted(set(wanted) - present)
        if absent:
            self.problems.append(f"{where}: no label {absent} (the series have {sorted(present)})")

    def labels(self, node: pq.Expr) -> frozenset[str]:
        """The label names of the series ``node`` evaluates to; problems are collected."""
        if isinstance(node, pq.VectorSelector):
            return self.selector(node)
        if isinstance(node, pq.MatrixSelector):
            return self.selector(node.vector_selector)
        if isinstance(node, pq.ParenExpr | pq.UnaryExpr | pq.SubqueryExpr):
            return self.labels(node.expr)
        if isinstance(node, pq.NumberLiteral | pq.StringLiteral):
            return frozenset()
        if isinstance(node, pq.Call):
            return self.call(node)
        if isinstance(node, pq.AggregateExpr):
            return self.aggregate(node)
        if isinstance(node, pq.BinaryExpr):
            return self.binary(node)
        self.problems.append(f"{type(node).__name__}: not followed by this check")
        return frozenset()

    def selector(self, node: pq.VectorSelector) -> frozenset[str]:
        if node.name is None:
            self.problems.append(f"{node}: a selector without a metric name")
            return frozenset()
        if node.name not in self.series:
            self.problems.append(f"{node.name}: no such series is exposed")
            return frozenset()
        present = self.series[node.name] | self.target_labels
        matchers = [*node.matchers.matchers, *(m for ms in node.matchers.or_matchers for m in ms)]
        self.missing(str(node), [m.name for m in matchers], present)
        return present

    def call(self, node: pq.Call) -> frozenset[str]:
        name = node.func.name
        args = [self.labels(arg) for arg in node.args if isinstance(arg, pq.Expr)]
        if name in _LABEL_WRITERS:
            self.problems.append(f"{name}: writes labels, which this check does not follow")
        if name == "histogram_quantile":
            buckets = args[-1]
            self.missing(f"{name} over {node.args[-1]}", ["le"], buckets)
            return buckets - {"le"}
        return frozenset().union(*args)

    def aggregate(self, node: pq.AggregateExpr) -> frozenset[str]:
        present = self.labels(node.expr)
        if isinstance(node.param, pq.Expr):
            self.labels(node.param)
        op = str(node.op)
        grouped: frozenset[str] = frozenset()
        if node.modifier is not None:
            by = node.modifier.type == pq.AggModifierType.By
            where = f"{op} {'by' if by else 'without'} ({', '.join(node.modifier.labels)})"
            self.missing(where, node.modifier.labels, present)
            grouped = frozenset(node.modifier.labels) if by else present - set(node.modifier.labels)
        if op in _SERIES_SELECTORS:
            return present
        if op == "count_values" and isinstance(node.param, pq.StringLiteral):
            return grouped | {node.param.val}
        return grouped

    def binary(self, node: pq.BinaryExpr) -> frozenset[str]:
        lhs, rhs = self.labels(node.lhs), self.labels(node.rhs)
        if _is_scalar(node.lhs) or _is_scalar(node.rhs):
            # A scalar side takes the other side's labels (none when both are scalars).
            return rhs if _is_scalar(node.lhs) else lhs
        op = str(node.op)
        modifier = node.modifier
        matching = modifier.matching if modifier is not None else None
        if matching is not None:
            on = matching.type == pq.LabelModifierType.Include
            where = f"{op} {'on' if on else 'ignoring'} ({', '.join(matching.labels)})"
            self.missing(f"{where}, left side", matching.labels, lhs)
            self.missing(f"{where}, right side", matching.labels, rhs)
        if op in ("and", "unless"):
            return lhs
        if op == "or":
            return lhs | rhs
        card = modifier.card if modifier is not None else pq.VectorMatchCardinality.OneToOne
        include = list(modifier.group_labels or []) if modifier is not None else []
        if card == pq.VectorMatchCardinality.ManyToOne:
            self.missing(f"{op} group_left", include, rhs)
            return lhs | set(include)
        if card == pq.VectorMatchCardinality.OneToMany:
            self.missing(f"{op} group_right", include, lhs)
            return rhs | set(include)
        if matching is None:
            # One-to-one on every label: sides with different label names never match.
            if lhs != rhs:
                self.problems.append(
                    f"{op}: the sides have different labels ({sorted(lhs)} and {sorted(rhs)}),"
                    " so no series would match; aggregate both by the same labels"
                )
            return lhs & rhs
        if on:
            return frozenset(matching.labels)
        return lhs - set(matching.labels)


def check(
    expr: str, series: Series, target_labels: frozenset[str] = TARGET_LABELS
) -> tuple[frozenset[str], list[str]]:
    """The label names of the result of ``expr``, and every problem found in it: a syntax
    error, a series not in ``series``, a label name that is not on the series where it is used
    (``target_labels`` count as on every series)."""
    try:
        tree = pq.parse(expr)
    except ValueError as error:
        return frozenset(), [f"does not parse: {error}"]
    checker = _Checker(series, target_labels)
    result = checker.labels(tree)
    return result, checker.problems
