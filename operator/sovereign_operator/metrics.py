"""Prometheus metrics of the operator: reconciles, errors, jobs by phase, reconcile latency."""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .api.v1alpha1.finetunejob import FineTuneJobPhase


class _PhaseCollector(Collector):
    """sovai_finetunejobs{phase}: how many jobs are in each phase, as last written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phase_of: dict[str, str] = {}

    def set(self, uid: str, phase: str | None) -> None:
        with self._lock:
            if phase is None:
                self._phase_of.pop(uid, None)
            else:
                self._phase_of[uid] = phase

    def counts(self) -> dict[str, int]:
        with self._lock:
            tally = Tally(self._phase_of.values())
        return {phase.value: tally.get(phase.value, 0) for phase in FineTuneJobPhase}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "sovai_finetunejobs", "FineTuneJobs by phase, as last written", labels=["phase"]
        )
        for phase, count in self.counts().items():
            family.add_metric([phase], count)
        yield family


class Metrics:
    """The operator's metrics, in their own registry (no process-global state in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "sovai_reconciles_total",
            "Reconcile passes",
            ["kind", "handler"],
            registry=self.registry,
        )
        self.errors = Counter(
            "sovai_reconcile_errors_total",
            "Reconcile passes that raised",
            ["kind", "handler", "error"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sovai_reconcile_duration_seconds",
            "Duration of one reconcile pass",
            ["kind", "handler"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.phases = _PhaseCollector()
        self.registry.register(self.phases)

    def serve(self, port: int) -> None:
        """Expose /metrics on ``port`` (0: do not serve)."""
        if port:
            start_http_server(port, registry=self.registry)
