"""The result document is kept on the job's MLflow run, byte for byte as the SOVAI_RESULT line
carries it, where the operator reads it back when the log is gone (backends/mlflow_result.py).

A real MLflow store (sqlite), written the way the trainer writes it (tracking.open_run,
tracking.keep_result); read back with MLflow's own client, and parsed with the operator's
parser of the log's line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from sovereign_operator.backends.logs import result as parse_result
from sovereign_operator.backends.logs import result_document
from sovereign_training.progress import RESULT_KEYS, result_body, result_line
from sovereign_training.tracking import (
    JOB_UID_TAG,
    RESULT_ARTIFACT,
    RESULT_TAG,
    keep_result,
    open_run,
)

pytestmark = pytest.mark.training

JOB_UID = "6f1c2d3e-aaaa-bbbb-cccc-0123456789ab"


def test_the_result_is_kept_on_the_run_tagged_with_the_job_uid(tmp_path: Path) -> None:
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id, experiment_id = open_run(tracking, "team-a/faq", "team-a-faq", {JOB_UID_TAG: JOB_UID})
    values = {key: None for key in RESULT_KEYS} | {
        "runId": run_id,
        "experimentId": experiment_id,
        "modelUri": "models:/faq/1",
        "gpuHours": float("nan"),  # made null, as in the line
        "nodes": [{"node": f"gpu-{i}", "region": "eu-west-par"} for i in range(200)],
        "localModelDir": "/tmp/x",  # not in the contract: in neither place
    }
    body = result_body(values)
    keep_result(tracking, run_id, body)

    client = MlflowClient(tracking)
    [run] = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{JOB_UID_TAG}` = '{JOB_UID}' and tags.`{RESULT_TAG}` = "
        f"'{RESULT_ARTIFACT}'",
    )
    assert run.info.run_id == run_id
    kept = Path(client.download_artifacts(run_id, RESULT_ARTIFACT, str(tmp_path / "dl")))
    text = kept.read_text(encoding="utf-8")
    # Byte for byte what the line carries; larger than a tag may hold (8,000 characters).
    assert result_line(values) == "SOVAI_RESULT " + text
    assert len(text) > 8000
    # The operator's parser reads both the same.
    assert result_document(text) == parse_result(result_line(values))
    document = result_document(text)
    assert document is not None
    assert document["runId"] == run_id
    assert document["gpuHours"] is None
    assert "localModelDir" not in document
    assert json.loads(text) == document
