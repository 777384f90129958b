"""The follow-up sweep: one loop over all unfinished FineTuneJobs and all ModelDeployments,
instead of a Kopf timer per object.

A Kopf timer per object keeps, for every object, a task and its latest full body in memory,
and wakes every one on every tick. The sweep keeps a name per followed object
(``OperatorState.jobs``), asks the indexes which objects' children changed (a job's RayJob or pods;
a deployment's Deployment, pods or FineTuneJob) or which reached a deadline, and reads only
those from the API server. Events on the object itself (create, spec update, resume, delete)
are Kopf's handlers' business.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from ..api.v1alpha1.modeldeployment import KIND as MDEP_KIND
from . import modeldeployment
from .finetunejob import follow, needs_pass
from .state import JobRef, OperatorState
from .terminating import finalize_terminating

log = logging.getLogger(__name__)


def _due(state: OperatorState, uid: str, job: JobRef) -> bool:
    if job.kind == MDEP_KIND:
        return modeldeployment.needs_pass(state, uid, job)
    return needs_pass(state, uid)


def _follow_logged(state: OperatorState, uid: str, job: JobRef) -> None:
    """One object's pass; its failure is logged (and counted) and retried on the next tick."""
    try:
        if job.kind == MDEP_KIND:
            modeldeployment.follow(state, uid, job)
        else:
            follow(state, uid, job)
    except Exception:
        log.exception("follow-up of %s %s/%s failed", job.kind, job.namespace, job.name)


def policies_fingerprint(index: Mapping[str, Any] | None) -> str:
    """A digest of every SovereigntyPolicy's spec, as the index holds them now."""
    specs = {name: [dict(spec) for spec in (index or {}).get(name, ())] for name in index or {}}
    return hashlib.sha256(json.dumps(specs, sort_keys=True, default=str).encode()).hexdigest()


async def sweep(state: OperatorState) -> int:
    """Pass over every job that needs it, as many at once as the thread pool runs; returns
    how many were due. A policy that changed (or went) makes every job due: what runs must
    still be allowed, and a tightened policy stops what it no longer allows."""
    fingerprint = policies_fingerprint(state.indexes.get("sovai_policies"))
    if fingerprint != state.policies_seen:
        if state.policies_seen is not None:
            state.seen.clear()
        state.policies_seen = fingerprint
    due = [(uid, job) for uid, job in list(state.jobs.items()) if _due(state, uid, job)]
    await asyncio.gather(*(state.in_thread(_follow_logged, state, uid, job) for uid, job in due))
    return len(due)


async def follow_jobs(state: OperatorState, interval: float) -> None:
    """Sweep every ``interval`` seconds until cancelled (at operator shutdown); each sweep
    also finalizes what Kopf no longer watches in watched namespaces being deleted."""
    while True:
        await asyncio.sleep(interval)
        try:
            await sweep(state)
            await state.in_thread(finalize_terminating, state)
        except Exception:  # the loop must outlive any one sweep
            log.exception("follow-up sweep failed")
