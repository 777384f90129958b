"""The follow-up sweep: one loop over all unfinished FineTuneJobs, instead of a Kopf timer
per job.

A Kopf timer per job keeps, for every job, a task and the job's latest full body in memory,
and wakes every job on every tick. The sweep keeps a name per unfinished job
(``Runtime.jobs``), asks the indexes which jobs' RayJobs or pods changed or which reached a
deadline, and reads only those from the API server. Events on the job itself (create, spec
update, resume, delete) are Kopf's handlers' business, as before.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from .finetunejob import follow, needs_pass
from .runtime import JobRef, Runtime
from .terminating import finalize_terminating

log = logging.getLogger(__name__)


def _follow_logged(rt: Runtime, uid: str, job: JobRef) -> None:
    """One job's pass; its failure is logged (and counted) and retried on the next tick."""
    try:
        follow(rt, uid, job)
    except Exception:
        log.exception("follow-up of FineTuneJob %s/%s failed", job.namespace, job.name)


def policies_fingerprint(index: Mapping[str, Any] | None) -> str:
    """A digest of every SovereigntyPolicy's spec, as the index holds them now."""
    specs = {name: [dict(spec) for spec in (index or {}).get(name, ())] for name in index or {}}
    return hashlib.sha256(json.dumps(specs, sort_keys=True, default=str).encode()).hexdigest()


async def sweep(rt: Runtime) -> int:
    """Pass over every job that needs it, as many at once as the thread pool runs; returns
    how many were due. A policy that changed (or went) makes every job due: what runs must
    still be allowed, and a tightened policy stops what it no longer allows."""
    fingerprint = policies_fingerprint(rt.indexes.get("sovai_policies"))
    if fingerprint != rt.policies_seen:
        if rt.policies_seen is not None:
            rt.seen.clear()
        rt.policies_seen = fingerprint
    due = [(uid, job) for uid, job in list(rt.jobs.items()) if needs_pass(rt, uid)]
    await asyncio.gather(*(rt.in_thread(_follow_logged, rt, uid, job) for uid, job in due))
    return len(due)


async def follow_jobs(rt: Runtime, interval: float) -> None:
    """Sweep every ``interval`` seconds until cancelled (at operator shutdown); each sweep
    also finalizes what Kopf no longer watches in watched namespaces being deleted."""
    while True:
        await asyncio.sleep(interval)
        try:
            await sweep(rt)
            await rt.in_thread(finalize_terminating, rt)
        except Exception:  # the loop must outlive any one sweep
            log.exception("follow-up sweep failed")
