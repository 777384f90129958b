"""What a registered version and the result say the model was made from (pure: no training)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sovereign_training.config import parse_config
from sovereign_training.loop import lineage_tags, result_inputs
from sovereign_training.progress import RESULT_KEYS, parse_line, result_line

from .conftest import job_dict

pytestmark = pytest.mark.training

TRAIN_SHA = "ab" * 32
VAL_SHA = "cd" * 32
HEAD = "sha256:" + "ef" * 32
NODES = [{"node": "gpu-1", "region": "eu-west-par"}]


def tags_of(tmp_path: Path, **sections: Any) -> dict[str, str]:
    cfg = parse_config(job_dict(tmp_path, tmp_path / "train.jsonl", **sections))
    return lineage_tags(
        cfg, {"training": TRAIN_SHA}, NODES, 100, 0.5, "full model", base_revision="abc123"
    )


def test_lineage_tags_name_the_policy_and_the_audit_chain_head(tmp_path: Path) -> None:
    tags = tags_of(
        tmp_path,
        placement={"regions": ["eu-west-par"], "policyName": "eu-only"},
        audit={"chainHead": HEAD},
    )
    assert tags["sovai.policy.name"] == "eu-only"
    assert tags["sovai.audit.chain_head"] == HEAD
    assert tags["sovai.base_model.revision"] == "abc123"
    assert tags["sovai.dataset.training_sha256"] == TRAIN_SHA


def test_lineage_tags_leave_out_what_the_config_does_not_name(tmp_path: Path) -> None:
    tags = tags_of(tmp_path)
    assert "sovai.policy.name" not in tags
    assert "sovai.audit.chain_head" not in tags


@pytest.mark.parametrize(
    ("uri", "shas", "expected"),
    [
        (
            "hf://acme/tiny-llama",
            {"training": TRAIN_SHA},
            {
                "datasets": {"training": TRAIN_SHA},
                "baseModel": {"uri": "hf://acme/tiny-llama", "revision": "abc123"},
            },
        ),
        (
            "models:/support-base/3",
            {"training": TRAIN_SHA, "validation": VAL_SHA},
            {
                "datasets": {"training": TRAIN_SHA, "validation": VAL_SHA},
                "baseModel": {"uri": "models:/support-base/3", "revision": "abc123"},
            },
        ),
        # Redacted as the MLflow tags are: no user info, no query (a pre-signed URL's signature).
        (
            "s3://key:secret@eu-models/llama?X-Amz-Signature=abc",
            {"training": TRAIN_SHA},
            {
                "datasets": {"training": TRAIN_SHA},
                "baseModel": {"uri": "s3://eu-models/llama", "revision": "abc123"},
            },
        ),
    ],
    ids=["hf", "with-validation", "redacted"],
)
def test_result_inputs_name_the_datasets_and_the_base_model(
    tmp_path: Path, uri: str, shas: dict[str, str], expected: dict[str, Any]
) -> None:
    job = job_dict(tmp_path, tmp_path / "train.jsonl")
    job["baseModel"]["uri"] = uri
    inputs = result_inputs(parse_config(job), shas, base_revision="abc123")
    assert inputs == expected
    # The same URI as the lineage tags: the audit log and the registry agree.
    tags = lineage_tags(parse_config(job), shas, NODES, 1, 0.0, "full model", base_revision="")
    assert inputs["baseModel"]["uri"] == tags["sovai.base_model.uri"]


def test_the_result_line_carries_the_inputs() -> None:
    inputs = {
        "datasets": {"training": TRAIN_SHA, "validation": VAL_SHA},
        "baseModel": {"uri": "hf://acme/tiny-llama", "revision": "0" * 40},
    }
    result = {key: None for key in RESULT_KEYS} | {"inputs": inputs, "localModelDir": "/tmp/x"}
    line = result_line(result)
    parsed = parse_line(line)
    assert parsed is not None
    assert parsed[1]["inputs"] == inputs
    assert "localModelDir" not in parsed[1]  # only the contract's keys
    # A few hundred bytes: far within the operator's log tail (kuberay.LOG_TAIL_BYTES).
    assert len(json.dumps(inputs, separators=(",", ":"))) < 400
    with pytest.raises(KeyError, match="inputs"):
        result_line({key: None for key in RESULT_KEYS if key != "inputs"})
