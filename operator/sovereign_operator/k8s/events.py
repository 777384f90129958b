"""Kubernetes Events about the operator's objects: built here (pure), posted by OperatorState."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

COMPONENT = "sovereign-ai-operator"
MESSAGE_LIMIT = 1024


def last_change(conditions: Iterable[Any]) -> datetime | None:
    """When a status last changed: the latest lastTransitionTime of its conditions."""
    times = [c.last_transition_time for c in conditions if c.last_transition_time is not None]
    return max(times, default=None)


def transition_key(before: str, after: str, previous_changed: datetime | None) -> str:
    """What makes one phase transition this transition: the phases, and when the status it
    leaves last changed. The same pass run twice (an operator killed after posting the Event
    but before recording the new phase) gives the same key; a later, real return to the same
    phases gives another, because the status it leaves changed in between."""
    stamp = previous_changed.isoformat() if previous_changed else "-"
    return f"{before}>{after}@{stamp}"


def build_event(
    obj: Mapping[str, Any],
    kind: str,
    reason: str,
    message: str,
    now: datetime,
    key: str | None = None,
) -> dict[str, Any]:
    """A core/v1 Event on ``obj`` (what `kubectl describe` lists under Events). With ``key``,
    its name is derived from the object's uid and the key, so posting it twice is refused as
    AlreadyExists instead of making a duplicate."""
    metadata = obj.get("metadata") or {}
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    prefix = f"{metadata.get('name', 'object')[:200]}."
    naming: dict[str, str] = {"generateName": prefix}
    if key is not None:
        digest = hashlib.sha256(f"{metadata.get('uid')}|{key}".encode()).hexdigest()[:16]
        naming = {"name": prefix + digest}
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            **naming,
            "namespace": metadata.get("namespace") or "default",
        },
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
        },
        "type": kind,
        "reason": reason,
        "message": message[:MESSAGE_LIMIT],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
