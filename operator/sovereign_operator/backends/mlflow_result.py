"""A job's result from its MLflow run, for when the submitter's log no longer gives it.

The trainer keeps the result document (the SOVAI_RESULT line's JSON, byte for byte) on its run
as the artifact RESULT_ARTIFACT, and then tags the run RESULT_TAG (sovereign_training.tracking
.keep_result). The run is found by the job's uid among the runs of the job's experiment, and
must also name the job's namespace and name (the trainer tags all three).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sovereign_training.tracking import JOB_UID_TAG, RESULT_ARTIFACT, RESULT_TAG

from ..builders.context import Owner
from ..mlflow_rest import MlflowRest
from .logs import result_document

JOB_NAMESPACE_TAG = "sovai.job.namespace"
JOB_NAME_TAG = "sovai.job.name"
# A restarted driver of a job that had finished opens a second run with the same result; a
# handful covers every run one job makes.
MAX_RUNS = 10


@dataclass(frozen=True)
class KeptResult:
    """The result document, and the run that kept it."""

    run_id: str
    document: dict[str, Any]


def search_body(experiment_id: str, uid: str) -> dict[str, Any]:
    """runs/search for the runs of job ``uid`` that kept a result, newest first. Pure."""
    return {
        "experiment_ids": [experiment_id],
        # A Kubernetes uid is hex digits and dashes: nothing to escape in the quotes.
        "filter": f"tags.`{JOB_UID_TAG}` = '{uid}' and tags.`{RESULT_TAG}` = '{RESULT_ARTIFACT}'",
        "order_by": ["attributes.start_time DESC"],
        "max_results": MAX_RUNS,
    }


def runs_of_job(answer: Mapping[str, Any], owner: Owner) -> list[str]:
    """The ids of the runs in a runs/search answer that name this job by uid, namespace and
    name, in the answer's order. Pure."""
    found = []
    for run in answer.get("runs") or []:
        if not isinstance(run, dict):
            continue
        info, data = run.get("info") or {}, run.get("data") or {}
        tags = {str(t.get("key")): t.get("value") for t in data.get("tags") or []}
        names = (tags.get(JOB_UID_TAG), tags.get(JOB_NAMESPACE_TAG), tags.get(JOB_NAME_TAG))
        if names == (owner.uid, owner.namespace, owner.name) and info.get("run_id"):
            found.append(str(info["run_id"]))
    return found


def find_kept_result(mlflow: MlflowRest, experiment: str, owner: Owner) -> KeptResult | str:
    """The result the job's run kept, or why there is none (a sentence naming what was
    looked for). MlflowError when MLflow cannot be read."""
    looked_for = (
        f"{mlflow.where} has no run in experiment {experiment!r} tagged "
        f"{JOB_UID_TAG}={owner.uid} that kept a result ({RESULT_ARTIFACT})"
    )
    found = mlflow.get(
        "experiments/get-by-name", {"experiment_name": experiment}, f"experiment {experiment!r}"
    )
    experiment_id = ((found or {}).get("experiment") or {}).get("experiment_id")
    if not experiment_id:
        return looked_for
    answer = mlflow.post(
        "runs/search",
        search_body(str(experiment_id), owner.uid),
        f"runs of experiment {experiment!r}",
    )
    unreadable = []
    for run_id in runs_of_job(answer, owner):
        content = mlflow.artifact(run_id, RESULT_ARTIFACT)
        document = result_document(content.decode("utf-8", "replace")) if content else None
        if document is not None:
            return KeptResult(run_id, document)
        unreadable.append(run_id)
    if unreadable:
        return (
            f"{mlflow.where}: the {RESULT_ARTIFACT} of run(s) {', '.join(unreadable)} "
            "is missing or not a result document"
        )
    return looked_for
