"""Kubernetes Events about the operator's objects: built here (pure), posted by Runtime."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

COMPONENT = "sovereign-ai-operator"
MESSAGE_LIMIT = 1024


def build_event(
    obj: Mapping[str, Any], kind: str, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    """A core/v1 Event on ``obj`` (what `kubectl describe` lists under Events)."""
    metadata = obj.get("metadata") or {}
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{metadata.get('name', 'object')[:200]}.",
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
