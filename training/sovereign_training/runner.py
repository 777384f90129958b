"""The driver of `train`: validate, open the MLflow run, run the loop (Ray or not), report.

Storage for Ray Train checkpoints: SOVAI_CHECKPOINT_URI if set (a local path, pvc:// or s3://;
it must be shared by all nodes of a multi-node job), else `<output.uri>.checkpoints` when
output.uri is set, else ~/ray_results. The run is named <namespace>-<name>-<uid prefix>, so a
driver restarted with the same storage resumes the job from its latest checkpoint.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .config import TrainingConfig
from .data import read_rows
from .loop import LocalWorker, WorkerSetup, train_worker
from .progress import RESULT_PREFIX, emit, result_body
from .sources import checked_dataset, parse_uri
from .tracking import JOB_UID_TAG, finish_run, keep_result, open_run, resolve_tracking_uri


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def mlflow_available() -> bool:
    return importlib.util.find_spec("mlflow") is not None


def run_name(cfg: TrainingConfig) -> str:
    raw = f"{cfg.job.namespace}-{cfg.job.name}-{cfg.job.uid[:8]}"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", raw)


def checkpoint_storage(cfg: TrainingConfig) -> str:
    """Where checkpoints go (module doc), as a local path or s3:// URI."""
    raw = os.environ.get("SOVAI_CHECKPOINT_URI")
    if not raw and cfg.output.uri:
        raw = cfg.output.uri.rstrip("/") + ".checkpoints"
    if not raw:
        return str(Path.home() / "ray_results")
    uri = parse_uri(raw, "SOVAI_CHECKPOINT_URI")
    if uri.scheme == "s3":
        return raw
    if uri.scheme in ("local", "pvc"):
        return str(Path(uri.location).resolve())
    raise ValueError(f"SOVAI_CHECKPOINT_URI: use a local path, pvc:// or s3://, not {raw!r}")


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "auto"):
        return default
    return value in ("1", "true", "yes", "on")


def verify_datasets(cfg: TrainingConfig) -> dict[str, str]:
    """Fetch each dataset, check sha256 and the rows' format before any worker starts."""
    ds = cfg.dataset
    path, sha = checked_dataset(ds.training_uri, "dataset.trainingUri", ds.expected_sha256)
    read_rows(path, ds.format.value, "dataset.trainingUri")
    shas = {"training": sha}
    if ds.validation_uri:
        vpath, vsha = checked_dataset(ds.validation_uri, "dataset.validationUri", None)
        read_rows(vpath, ds.format.value, "dataset.validationUri")
        shas["validation"] = vsha
    return shas


def run_job(
    cfg: TrainingConfig,
    *,
    use_ray: bool | None = None,
    compile_model: bool | None = None,
    gradient_checkpointing: bool | None = None,
    work_dir: str | None = None,
    print_result: bool = True,
) -> dict[str, Any]:
    """Train per `cfg`; returns the result (and prints SOVAI_RESULT)."""
    started_at = time.time()  # the job's wall time starts here (accounting.py)
    shas = verify_datasets(cfg)
    gpus = cfg.resources.gpus_per_worker
    use_ray = ray_available() if use_ray is None else use_ray
    if compile_model is None:
        compile_model = _env_flag("SOVAI_TORCH_COMPILE", default=gpus > 0)
    if gradient_checkpointing is None:
        gradient_checkpointing = _env_flag("SOVAI_GRADIENT_CHECKPOINTING", default=False)
    work = work_dir or os.environ.get("SOVAI_WORK_DIR") or ""
    # A folder made here is removed at the end: on a shared Ray cluster each job would
    # otherwise leave its model copy in the node's temp folder. A folder named by the caller
    # is the caller's.
    owned = not work
    work = work or tempfile.mkdtemp(prefix="sovai-train-")
    Path(work).mkdir(parents=True, exist_ok=True)

    tracking_uri = run_id = experiment_id = None
    if mlflow_available():
        tracking_uri = resolve_tracking_uri()
        tags = {
            JOB_UID_TAG: cfg.job.uid,
            "sovai.job.namespace": cfg.job.namespace,
            "sovai.job.name": cfg.job.name,
            "sovai.method": cfg.method.type,
        }
        run_id, experiment_id = open_run(
            tracking_uri, cfg.tracking.experiment_name, run_name(cfg), tags
        )
    else:
        emit("sovereign_training: mlflow is not installed; training without tracking")

    crash_at = os.environ.get("SOVAI_TEST_CRASH_AT_STEP")
    setup = WorkerSetup(
        config_json=cfg.model_dump_json(by_alias=True),
        dataset_sha256=shas,
        work_dir=str(Path(work).resolve()),
        tracking_uri=tracking_uri,
        run_id=run_id,
        experiment_id=experiment_id,
        compile=compile_model,
        gradient_checkpointing=gradient_checkpointing,
        # On by default, as measured on an H200 (docs/benchmarks.md); only where supported.
        float8=_env_flag("SOVAI_FLOAT8", default=True),
        flex_attention=_env_flag("SOVAI_FLEX_ATTENTION", default=True),
        crash_at_step=int(crash_at) if crash_at else None,
        crash_rank=int(os.environ.get("SOVAI_TEST_CRASH_RANK", "0")),
        crash_marker=os.environ.get("SOVAI_TEST_CRASH_MARKER"),
        extra_tags={"sovai.runtime": "ray" if use_ray else "single-process"},
        started_at=started_at,
    )
    ok = False
    try:
        if use_ray:
            from .ray_backend import run_with_ray

            result = run_with_ray(cfg, setup, checkpoint_storage(cfg), run_name(cfg))
        else:
            result = _run_local(cfg, setup)
        body = result_body(result)
        if tracking_uri and run_id:
            _keep_result(tracking_uri, run_id, body)
        ok = True
    finally:
        if tracking_uri and run_id:
            finish_run(tracking_uri, run_id, ok)
        if owned:
            shutil.rmtree(work, ignore_errors=True)
    if owned:
        result.pop("localModelDir", None)  # removed with the folder
    if print_result:
        emit(RESULT_PREFIX + body)
    return result


def _keep_result(tracking_uri: str, run_id: str, body: str) -> None:
    """The result on the run too, before the run is finished. The log's line stays the first
    place the operator reads it from; a tracking server that fails this one write does not
    fail a job that trained and registered its model."""
    try:
        keep_result(tracking_uri, run_id, body)
    except Exception as error:  # MLflow's, requests' and the artifact store's errors alike
        emit(f"sovereign_training: the result could not be kept on MLflow run {run_id}: {error}")


def _run_local(cfg: TrainingConfig, setup: WorkerSetup) -> dict[str, Any]:
    """One process, one worker: the global batch is kept (accumulation absorbs the workers)."""
    import torch

    gpus = cfg.resources.gpus_per_worker
    if gpus > 0 and not torch.cuda.is_available():
        raise RuntimeError("resources.gpusPerWorker > 0 but no CUDA device is visible")
    device = torch.device("cuda:0" if gpus > 0 else "cpu")
    local_cfg = cfg.model_copy(
        update={
            "resources": cfg.resources.model_copy(
                update={"workers": 1, "gpus_per_worker": min(gpus, 1)}
            )
        }
    )
    setup.config_json = local_cfg.model_dump_json(by_alias=True)
    storage = checkpoint_storage(cfg)
    root = Path(storage if not storage.startswith("s3://") else setup.work_dir) / run_name(cfg)
    worker = LocalWorker(root, cfg.checkpointing.keep, device)
    return train_worker(setup, worker)
