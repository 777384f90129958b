"""The lines the operator reads from the job's log: SOVAI_PROGRESS and SOVAI_RESULT.

One compact JSON object per line, after the exact prefix. Non-finite numbers become null, so
every line is valid JSON.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

PROGRESS_PREFIX = "SOVAI_PROGRESS "
RESULT_PREFIX = "SOVAI_RESULT "
PROGRESS_KEYS = (
    "step",
    "totalSteps",
    "epoch",
    "trainLoss",
    "evalLoss",
    "tokensPerSecond",
    "estimatedRemainingSeconds",
    # What the job trains with, every "auto" chosen (hyperparameters.py): in every line, so
    # that the operator finds it in whatever part of the log it reads.
    "hyperparameters",
)
RESULT_KEYS = (
    "runId",
    "experimentId",
    "modelName",
    "modelVersion",
    "modelUri",
    "modelDigest",
    "outputUri",
    "tokensTrained",
    "gpuHours",
    "nodes",
    "compute",
    "inputs",
    "hyperparameters",
)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _body(prefix: str, keys: tuple[str, ...], values: dict[str, Any]) -> str:
    missing = [k for k in keys if k not in values]
    if missing:
        raise KeyError(f"{prefix.strip()} line lacks {missing}")
    body = {k: _clean(values[k]) for k in keys}
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def progress_line(values: dict[str, Any]) -> str:
    return PROGRESS_PREFIX + _body(PROGRESS_PREFIX, PROGRESS_KEYS, values)


def result_body(values: dict[str, Any]) -> str:
    """The result document as the SOVAI_RESULT line carries it, without the prefix: also what
    the job's MLflow run keeps (tracking.keep_result), byte for byte."""
    return _body(RESULT_PREFIX, RESULT_KEYS, values)


def result_line(values: dict[str, Any]) -> str:
    return RESULT_PREFIX + result_body(values)


def emit(line: str) -> None:
    """Print one line and flush, so the log shows it at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def parse_line(line: str) -> tuple[str, dict[str, Any]] | None:
    """(prefix name, body) for a SOVAI_PROGRESS / SOVAI_RESULT line anywhere in `line`."""
    for prefix in (PROGRESS_PREFIX, RESULT_PREFIX):
        at = line.find(prefix)
        if at >= 0:
            body = json.loads(line[at + len(prefix) :])
            if isinstance(body, dict):
                return prefix.strip(), body
    return None
