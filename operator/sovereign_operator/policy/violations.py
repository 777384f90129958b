"""A broken policy rule, typed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Violation:
    """One broken rule: the JSON path of the field at fault, a message that names it and what
    is allowed, and the allowed values themselves (for status and events)."""

    field: str
    message: str
    allowed: tuple[str, ...]
