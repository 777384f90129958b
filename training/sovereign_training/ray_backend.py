"""Running the loop under Ray Train: TorchTrainer, checkpoints, failure recovery.

Imported only when Ray is used: GPU benchmark hosts have no Ray.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .checkpoint import RESULT_FILE
from .config import TrainingConfig
from .loop import WorkerSetup, train_worker


class RayWorker:
    """One Ray Train worker, as the train loop sees it (loop.Worker)."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank: int = context.get_world_rank()
        self.world_size: int = context.get_world_size()
        self.device: torch.device = ray.train.torch.get_device()

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as folder:
            yield Path(folder)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        import ray.train

        checkpoint = (
            ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        )
        ray.train.report(metrics, checkpoint=checkpoint)

    def settle(self) -> None:
        import ray.train

        ray.train.get_all_reported_checkpoints()


def _worker_entry(config: dict[str, Any]) -> None:
    setup: WorkerSetup = config["setup"]
    Path(setup.work_dir).mkdir(parents=True, exist_ok=True)
    train_worker(setup, RayWorker())


def storage_filesystem(storage: str) -> tuple[str, Any]:
    """(path, pyarrow filesystem or None) for Ray's storage_path. An s3:// one is reached at the
    endpoint its bucket is declared at (storage.endpoint_url_for), which pyarrow would not
    find by itself."""
    import os

    from .storage import STORAGE, endpoint_url_for

    if not storage.startswith("s3://"):
        return storage, None
    endpoint = endpoint_url_for(storage, STORAGE)
    if not endpoint:
        return storage, None
    from pyarrow import fs

    scheme, _, host = endpoint.partition("://")
    filesystem = fs.S3FileSystem(
        endpoint_override=host or scheme,
        scheme=scheme if host else "https",
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "",
    )
    return storage.removeprefix("s3://"), filesystem


def run_with_ray(
    cfg: TrainingConfig, setup: WorkerSetup, storage: str, run_name: str
) -> dict[str, Any]:
    """Fit with TorchTrainer; returns rank 0's result. Connects to RAY_ADDRESS (the RayJob's
    cluster) or starts a local Ray when none is running."""
    import os

    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"))
    gpus = cfg.resources.gpus_per_worker
    resources: dict[str, float] = {"CPU": 1.0}
    if gpus:
        resources["GPU"] = float(gpus)
    storage_path, filesystem = storage_filesystem(storage)
    trainer = TorchTrainer(
        train_loop_per_worker=_worker_entry,
        train_loop_config={"setup": setup},
        scaling_config=ScalingConfig(
            num_workers=cfg.resources.workers, use_gpu=gpus > 0, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpointing.keep),
            failure_config=FailureConfig(max_failures=cfg.checkpointing.max_failures),
        ),
    )
    result = trainer.fit()
    metrics = result.metrics or {}
    final: dict[str, Any] = metrics.get("result") or {}
    if not final and result.checkpoint is not None:
        with result.checkpoint.as_directory() as folder:
            marker = Path(folder) / RESULT_FILE
            if marker.exists():
                final = json.loads(marker.read_text(encoding="utf-8"))
    if not final:
        raise RuntimeError(f"Ray Train finished without a result from rank 0: {metrics}")
    return final
