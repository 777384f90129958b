"""Ensure a child exists as built: create; on 409 get, compare, and patch what drifted."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .client import ApiError, Kube, kind_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ensured:
    """The live object and what ensure had to do: created, patched or nothing."""

    obj: dict[str, Any]
    action: str  # "created" | "patched" | "unchanged"


def drift(desired: Any, actual: Any) -> bool:
    """True when ``desired`` is not contained in ``actual``.

    Dicts compare key by key (extra keys in ``actual`` are server defaults, not drift); lists
    compare element-wise with the same rule; scalars compare equal, and a zero value equals
    an absent key.
    """
    if actual is None and not desired:
        # Go controllers drop omitempty zero values ({}, [], false, 0, "") when they write.
        return False
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return True
        return any(drift(value, actual.get(key)) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(desired) != len(actual):
            return True
        return any(drift(d, a) for d, a in zip(desired, actual, strict=True))
    return bool(desired != actual)


def _patch_of(desired: dict[str, Any]) -> dict[str, Any]:
    """The parts of a manifest the operator owns and may correct: labels, annotations, spec/data."""
    metadata = desired["metadata"]
    patch: dict[str, Any] = {
        "metadata": {
            "labels": metadata.get("labels", {}),
            "annotations": metadata.get("annotations", {}),
        }
    }
    for key in ("spec", "data"):
        if key in desired:
            patch[key] = desired[key]
    return patch


def ensure(kube: Kube, desired: dict[str, Any], live: dict[str, Any] | None = None) -> Ensured:
    """Make the child ``desired`` exist and match. ``live`` (e.g. from a cache) skips the get.

    Safe to call again and again and from a restarted operator: a deterministic name means a
    second create answers 409 and never makes a copy.
    """
    kind = kind_of(desired)
    namespace = desired["metadata"].get("namespace")
    name = desired["metadata"]["name"]
    if live is None:
        try:
            return Ensured(kube.create(desired), "created")
        except ApiError as error:
            if error.status != 409:
                raise
        live = kube.get(kind, namespace, name)
    patch = _patch_of(desired)
    if not drift(patch, live):
        return Ensured(live, "unchanged")
    log.info("patching drift of %s %s/%s", desired["kind"], namespace, name)
    return Ensured(kube.merge_patch(kind, namespace, name, patch), "patched")
