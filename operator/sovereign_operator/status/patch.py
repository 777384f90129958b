"""The merge patch that turns a stored status into a computed one (both kinds share it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api.v1alpha1.common import LAST_HANDLED_FIELD, OperatorStatus


def status_patch(current: Mapping[str, Any] | None, new: OperatorStatus) -> dict[str, Any] | None:
    """The whole computed status as one merge patch (a merge patch replaces lists, so the
    conditions go whole), with fields that disappeared nulled; None when nothing changed.

    Kopf's record of what it last handled is Kopf's to write, never nulled or compared here.
    """
    desired = new.to_json_dict()
    desired.pop(LAST_HANDLED_FIELD, None)
    existing = {key: value for key, value in (current or {}).items() if key != LAST_HANDLED_FIELD}
    if desired == existing:
        return None
    patch: dict[str, Any] = {key: None for key in existing if key not in desired}
    patch.update(desired)
    return patch
