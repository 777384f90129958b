"""Ensure a child exists as built: create it when it is missing; server-side apply when what the
operator owns of it drifted; never touch another owner's object."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..api.v1alpha1.common import quantity_value
from .client import ApiError, Kind, Kube, kind_of

log = logging.getLogger(__name__)


class ForeignChild(Exception):
    """A child's name is taken by an object that another owner (or nobody) controls: it is
    neither adopted nor changed."""

    def __init__(self, desired: dict[str, Any], live: dict[str, Any]) -> None:
        meta = live.get("metadata") or {}
        owners = [
            f"{ref.get('kind')} {ref.get('name')} (uid {ref.get('uid')})"
            for ref in meta.get("ownerReferences") or []
            if ref.get("controller")
        ]
        holder = ", ".join(owners) or "no controller"
        self.kind = str(desired["kind"])
        self.name = str(desired["metadata"]["name"])
        super().__init__(
            f"{self.kind} {meta.get('namespace')}/{self.name} already exists and belongs to "
            f"{holder}; it is left alone. Rename this object or remove that {self.kind}."
        )


def controller_uid(obj: dict[str, Any]) -> str | None:
    """The uid of the object's controlling owner, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


@dataclass(frozen=True)
class Ensured:
    """The live object and what ensure had to do: created, patched or nothing."""

    obj: dict[str, Any]
    action: str  # "created" | "patched" | "unchanged"


# Maps whose values are resource quantities, which the API server stores in its canonical
# form ("1.5Gi" comes back as "1536Mi", "+1" as "1"): compared by amount, not by spelling.
QUANTITY_MAPS = frozenset({"requests", "limits"})


def _same_quantity(desired: Any, actual: Any) -> bool:
    try:
        return quantity_value(desired) == quantity_value(actual)
    except (ValueError, TypeError, ArithmeticError):
        return False


def drift(desired: Any, actual: Any, key: str = "") -> bool:
    """True when ``desired`` is not contained in ``actual``.

    Dicts compare key by key (extra keys in ``actual`` are server defaults, not drift); lists
    compare element-wise with the same rule; scalars compare equal, and a zero value equals
    an absent key; resource quantities compare by amount.
    """
    if actual is None and not desired:
        # Go controllers drop omitempty zero values ({}, [], false, 0, "") when they write.
        return False
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return True
        if key in QUANTITY_MAPS:
            return any(
                value != actual.get(name) and not _same_quantity(value, actual.get(name))
                for name, value in desired.items()
            )
        return any(drift(value, actual.get(name), name) for name, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(desired) != len(actual):
            return True
        return any(drift(d, a) for d, a in zip(desired, actual, strict=True))
    return bool(desired != actual)


def _owned_parts(desired: dict[str, Any]) -> dict[str, Any]:
    """The parts of a manifest compared for drift: labels, annotations, spec or data."""
    metadata = desired["metadata"]
    parts: dict[str, Any] = {
        "metadata": {
            "labels": metadata.get("labels", {}),
            "annotations": metadata.get("annotations", {}),
        }
    }
    for key in ("spec", "data"):
        if key in desired:
            parts[key] = desired[key]
    return parts


def ensure(kube: Kube, desired: dict[str, Any], live: dict[str, Any] | None = None) -> Ensured:
    """Make the child ``desired`` exist and match. ``live`` (e.g. from a cache) skips the get.

    Safe to call again and again and from a restarted operator: the name is deterministic, so a
    second create answers 409 and never makes a copy. A missing child is created (one request,
    and the cheapest for the API server when thousands of jobs arrive at once); an existing one
    is changed only by server-side apply, and only when what the operator owns of it differs
    from what it builds. An existing object that another owner controls raises ForeignChild
    instead of being changed.
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
    wanted_owner = controller_uid(desired)
    if wanted_owner is not None and controller_uid(live) != wanted_owner:
        raise ForeignChild(desired, live)
    if not drift(_owned_parts(desired), live):
        return Ensured(live, "unchanged")
    log.info(
        "re-applying %s %s/%s: it differs from what is built", desired["kind"], namespace, name
    )
    return Ensured(kube.apply(desired), "patched")


def delete_owned(kube: Kube, kind: Kind, namespace: str, name: str, owner_uid: str) -> bool:
    """Delete the child of that name only if ``owner_uid`` controls it (never another object's
    child that happens to have the name); False when there was nothing of ours to delete."""
    live = kube.get_or_none(kind, namespace, name)
    if live is None:
        return False
    if controller_uid(live) != owner_uid:
        log.warning(
            "not deleting %s %s/%s: another owner controls it", kind.plural, namespace, name
        )
        return False
    return kube.delete(kind, namespace, name, uid=str(live["metadata"]["uid"]))
