"""MLflow: the run, its params and metrics, and the registered model version with lineage.

The tracking URI comes from MLFLOW_TRACKING_URI. Without it, the embedded default is a sqlite
store, mlflow.db in the working directory, with artifacts in mlruns/ beside it (absolute paths,
so that Ray workers with another working directory write to the same store).
Registration follows the route that works for plain Hugging Face folders in MLflow 3: log the
folder as run artifacts, then create the model version from the artifact URI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from .storage import route_mlflow_artifacts

JOB_UID_TAG = "sovai.job.uid"
# The result document (the SOVAI_RESULT line's JSON) as an artifact of the job's run, so that
# the operator can still read it when the submitter's log is gone (docs/operator.md). An
# artifact, not a tag: a tag's value is capped at 8,000 characters (5,000 on older servers),
# and the result's node list grows with the job. The tag names the artifact, so that a search
# by job uid finds only runs that carry one.
RESULT_ARTIFACT = "sovai/result.json"
RESULT_TAG = "sovai.result"


def redact_uri(uri: str | None) -> str:
    """A URI safe to log: no user:password, no query (pre-signed URLs carry signatures there)."""
    if not uri:
        return ""
    parsed = urlparse(uri)
    if not parsed.scheme or parsed.scheme == "models":
        return uri
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc += f":{parsed.port}"
    return urlunparse((parsed.scheme, netloc, parsed.path, "", "", ""))


def resolve_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the embedded sqlite default (absolute)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return "sqlite:///" + str(Path.cwd().resolve() / "mlflow.db")


def _local_artifact_root(tracking_uri: str) -> str | None:
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return (db.parent / "mlruns").resolve().as_uri()
    return None


def client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def open_run(
    tracking_uri: str, experiment_name: str, run_name: str, tags: dict[str, str]
) -> tuple[str, str]:
    """(run id, experiment id): the unfinished run of this job (same job uid) when a restarted
    driver finds one, else a new run."""
    mlc = client(tracking_uri)
    experiment = mlc.get_experiment_by_name(experiment_name)
    if experiment is None:
        experiment_id = mlc.create_experiment(
            experiment_name, artifact_location=_local_artifact_root(tracking_uri)
        )
    else:
        experiment_id = experiment.experiment_id
    uid = tags.get(JOB_UID_TAG)
    if uid:
        runs = mlc.search_runs(
            [experiment_id],
            filter_string=f"tags.`{JOB_UID_TAG}` = '{uid}' and attributes.status != 'FINISHED'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        if runs:
            run_id = runs[0].info.run_id
            mlc.update_run(run_id, status="RUNNING")
            return run_id, experiment_id
    run = mlc.create_run(experiment_id, run_name=run_name, tags=tags)
    return run.info.run_id, experiment_id


def keep_result(tracking_uri: str, run_id: str, body: str) -> None:
    """Record the result document ``body`` on the run: RESULT_ARTIFACT, then RESULT_TAG naming
    it (in that order, so that a run tagged always has the artifact)."""
    from mlflow.entities import RunTag

    mlc = client(tracking_uri)
    route_mlflow_artifacts(mlc.get_run(run_id).info.artifact_uri)
    mlc.log_text(run_id, body, RESULT_ARTIFACT)
    mlc.log_batch(run_id, tags=[RunTag(RESULT_TAG, RESULT_ARTIFACT)])


def finish_run(tracking_uri: str, run_id: str, ok: bool) -> None:
    client(tracking_uri).set_terminated(run_id, status="FINISHED" if ok else "FAILED")


class RunLogger:
    """Logs params, metrics and tags to one run (used on rank 0 only)."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.client = client(tracking_uri)
        self.run_id = run_id

    def params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        current = self.client.get_run(self.run_id).data.params
        # A resumed attempt logs the same values again; MLflow refuses a changed value, and an
        # unchanged one needs no second write.
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in current]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i : i + 100])

    def metrics(self, step: int, values: dict[str, float | None]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in values.items() if v is not None]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def artifacts(self, folder: Path, artifact_path: str) -> None:
        route_mlflow_artifacts(self.client.get_run(self.run_id).info.artifact_uri)
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def register(
        self, name: str, artifact_path: str, tags: dict[str, str], description: str
    ) -> str:
        """Create (once) the registered model and a version from the run's `artifact_path`;
        returns the version number."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        run = self.client.get_run(self.run_id)
        version = self.client.create_model_version(
            name,
            source=f"{run.info.artifact_uri}/{artifact_path}",
            run_id=self.run_id,
            tags=tags,
            description=description,
        )
        return str(version.version)
