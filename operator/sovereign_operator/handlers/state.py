"""What every handler shares, kept in Kopf's memo: settings, client, metrics, per-job locks."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, ParamSpec, TypeVar, cast

import kopf
import urllib3

from ..audit.log import AuditLog
from ..backends.kuberay import KubeRayBackend
from ..backends.raycluster import RayClusterBackend
from ..builders.context import BuildConfig
from ..config import Settings
from ..k8s.client import ApiError, Kind, Kube
from ..k8s.events import build_event
from ..metrics import Metrics
from ..policy.places import Platform

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


class JobRef(NamedTuple):
    """Where an object the follow-up sweep follows lives, and its kind: all the sweep keeps of
    it between passes."""

    namespace: str
    name: str
    kind: str = "FineTuneJob"
    # A ModelDeployment's: the "namespace/name" of the FineTuneJob it serves, whose phase it
    # follows.
    source: str | None = None


@dataclass
class OperatorState:
    """Shared state of the running operator (one per process)."""

    settings: Settings
    kube: Kube
    metrics: Metrics
    build: BuildConfig
    kuberay: KubeRayBackend
    raycluster: RayClusterBackend
    # Kopf's thread pool, for async handlers that hand blocking work to a thread.
    executor: Executor | None = None
    # The audit log (SOVAI_AUDIT_URI); None when the operator keeps none.
    audit: AuditLog | None = None
    # Kopf's indexes (live views, kept current by Kopf), for work outside a handler call.
    indexes: Mapping[str, Any] = field(default_factory=dict)
    # What the follow-up sweep goes over, by uid: the FineTuneJobs not yet finished and every
    # ModelDeployment.
    jobs: dict[str, JobRef] = field(default_factory=dict)
    # Per object: what the last pass saw of its children, and until when an unchanged one needs
    # no new pass.
    seen: dict[str, tuple[Hashable, float]] = field(default_factory=dict)
    # The policies' fingerprint at the last sweep (finetunejob_follow.policies_fingerprint).
    policies_seen: str | None = None
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    @property
    def platform(self) -> Platform:
        """The operator's own places, which every policy must declare."""
        return Platform(self.build.mlflow_tracking_uri, self.build.hf_hub_offline)

    @contextmanager
    def job_lock(self, uid: str) -> Iterator[None]:
        """Serialise the create/update handlers and the timer of one job."""
        with self._guard:
            lock = self._locks.setdefault(uid, threading.Lock())
        with lock:
            yield

    def unfollow(self, uid: str) -> None:
        """A job leaves the follow-up sweep (it finished, or it is gone)."""
        self.jobs.pop(uid, None)
        self.seen.pop(uid, None)

    def forget(self, uid: str) -> None:
        with self._guard:
            self._locks.pop(uid, None)
        self.unfollow(uid)
        self.metrics.phases.set(uid, None)

    def due(self, uid: str, observed: Hashable) -> bool:
        """Whether a followed object needs a pass: never passed over, what its last pass
        observed differs from ``observed`` (read from the indexes), or its time came."""
        last = self.seen.get(uid)
        return last is None or last[0] != observed or time.monotonic() >= last[1]

    def current(self, uid: str, ref: JobRef, kind: Kind) -> kopf.Body | None:
        """The followed object as it is now, for a follow-up pass; None (and forgotten) when it
        was deleted, or deleted and made again (that one has its own uid)."""
        raw = self.kube.get_or_none(kind, ref.namespace, ref.name)
        if raw is None or str((raw.get("metadata") or {}).get("uid")) != uid:
            self.forget(uid)
            return None
        return kopf.Body(cast(kopf.RawBody, raw))

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

    async def in_thread(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run blocking ``fn`` in Kopf's thread pool, as Kopf runs sync handlers: with the
        caller's context variables, which Kopf's logging relies on."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    def event(
        self,
        body: Mapping[str, Any],
        kind: str,
        reason: str,
        message: str,
        key: str | None = None,
    ) -> None:
        """Post a Kubernetes Event on the object, when events are enabled. Posted here rather
        than through Kopf, whose event queue exists only inside its per-object tasks, so that
        the follow-up sweep can post too. With ``key`` (events.transition_key) an Event already
        posted for that key is not posted again. A failure to post is logged, never raised."""
        if not self.settings.post_events:
            return
        event = build_event(body, kind, reason, message, datetime.now(UTC), key)
        try:
            self.kube.create(event)
        except ApiError as error:
            if error.status == 409 and key is not None:
                log.debug("the %s Event for %s was posted already", reason, key)
                return
            if error.namespace_terminating:  # nothing can be posted there any more
                return
            log.warning("could not post the %s Event %s", reason, message[:200], exc_info=True)
        except (OSError, urllib3.exceptions.HTTPError):
            log.warning("could not post the %s Event %s", reason, message[:200], exc_info=True)


def state_of(memo: Any) -> OperatorState:
    """The OperatorState stored in Kopf's memo at startup."""
    state = memo.state
    assert isinstance(state, OperatorState)
    return state
