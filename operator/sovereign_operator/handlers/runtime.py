"""What every handler shares, kept in Kopf's memo: settings, client, metrics, per-job locks."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import kopf

from ..backends.kuberay import KubeRayBackend
from ..backends.raycluster import RayClusterBackend
from ..builders.context import BuildConfig
from ..config import Settings
from ..k8s.client import Kube
from ..metrics import Metrics


@dataclass
class Runtime:
    """Shared state of the running operator (one per process)."""

    settings: Settings
    kube: Kube
    metrics: Metrics
    build: BuildConfig
    kuberay: KubeRayBackend
    raycluster: RayClusterBackend
    # Per job: what the last pass saw, and until when an unchanged job needs no new pass.
    seen: dict[str, tuple[Hashable, float]] = field(default_factory=dict)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def job_lock(self, uid: str) -> Iterator[None]:
        """Serialise the create/update handlers and the timer of one job."""
        with self._guard:
            lock = self._locks.setdefault(uid, threading.Lock())
        with lock:
            yield

    def forget(self, uid: str) -> None:
        with self._guard:
            self._locks.pop(uid, None)
            self.seen.pop(uid, None)
        self.metrics.phases.set(uid, None)

    @contextmanager
    def measured(self, kind: str, handler: str) -> Iterator[None]:
        """Count, time, and count errors of one reconcile pass."""
        started = time.perf_counter()
        self.metrics.reconciles.labels(kind, handler).inc()
        try:
            yield
        except Exception as error:
            self.metrics.errors.labels(kind, handler, type(error).__name__).inc()
            raise
        finally:
            self.metrics.latency.labels(kind, handler).observe(time.perf_counter() - started)

    def event(self, body: kopf.Body, kind: str, reason: str, message: str) -> None:
        """Post a Kubernetes Event on the object, when events are enabled."""
        if self.settings.post_events:
            kopf.event(body, type=kind, reason=reason, message=message[:1024])


def runtime_of(memo: Any) -> Runtime:
    """The Runtime stored in Kopf's memo at startup."""
    runtime = memo.runtime
    assert isinstance(runtime, Runtime)
    return runtime
