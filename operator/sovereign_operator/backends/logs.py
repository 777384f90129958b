"""Parse the trainer's SOVAI_PROGRESS and SOVAI_RESULT lines out of a Ray job's logs (and the
result document the job's MLflow run keeps, which is the line's JSON).

The lines are the trainer's (sovereign_training.progress, the one definition of the
contract's prefixes and keys); the operator reads them from wherever the log is.
"""

from __future__ import annotations

import json
from typing import Any

from sovereign_training.progress import PROGRESS_PREFIX, RESULT_PREFIX

# The trainer's last progress line and, at the end, its result are in the tail of the driver's
# log: a few hundred lines are kilobytes, read whatever the log's length.
LOG_TAIL_LINES = 300
LOG_TAIL_BYTES = 256 * 1024


def _document(text: str) -> dict[str, Any] | None:
    """A JSON object, or None for anything else (torn, interleaved, not an object)."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _last_document(logs: str, prefix: str) -> dict[str, Any] | None:
    for line in reversed(logs.splitlines()):
        start = line.find(prefix)
        if start < 0:
            continue
        document = _document(line[start + len(prefix) :])
        if document is not None:
            return document
        # a torn or interleaved line; an earlier one may be whole
    return None


def last_progress(logs: str) -> dict[str, Any] | None:
    """The latest SOVAI_PROGRESS document, or None."""
    return _last_document(logs, PROGRESS_PREFIX)


def result(logs: str) -> dict[str, Any] | None:
    """The SOVAI_RESULT document, or None when the trainer has not printed it."""
    return _last_document(logs, RESULT_PREFIX)


def result_document(text: str) -> dict[str, Any] | None:
    """The result document kept apart from the log (the job's MLflow run keeps the line's JSON
    as an artifact), read as the line's would be; None when it is not one."""
    return _document(text)
