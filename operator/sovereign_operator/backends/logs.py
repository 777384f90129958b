"""Parse the trainer's SOVAI_PROGRESS and SOVAI_RESULT lines out of a Ray job's logs."""

from __future__ import annotations

import json
from typing import Any

PROGRESS_PREFIX = "SOVAI_PROGRESS "
RESULT_PREFIX = "SOVAI_RESULT "


def _last_document(logs: str, prefix: str) -> dict[str, Any] | None:
    for line in reversed(logs.splitlines()):
        start = line.find(prefix)
        if start < 0:
            continue
        try:
            document = json.loads(line[start + len(prefix) :])
        except ValueError:
            continue  # a torn or interleaved line; an earlier one may be whole
        if isinstance(document, dict):
            return document
    return None


def last_progress(logs: str) -> dict[str, Any] | None:
    """The latest SOVAI_PROGRESS document, or None."""
    return _last_document(logs, PROGRESS_PREFIX)


def result(logs: str) -> dict[str, Any] | None:
    """The SOVAI_RESULT document, or None when the trainer has not printed it."""
    return _last_document(logs, RESULT_PREFIX)
