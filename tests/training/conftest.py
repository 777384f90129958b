"""Training-tier fixtures: the tiny model, small datasets, job configs and one Ray session."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sovereign_training.tiny import create_tiny_model, sample_dataset_path

NODE_NAME = "cpu-node-eu-1"
NODE_REGION = "eu-central-1"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama and its tokenizer (with a chat template)."""
    return create_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def chat_rows() -> list[str]:
    return sample_dataset_path().read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="session")
def small_datasets(
    tmp_path_factory: pytest.TempPathFactory, chat_rows: list[str]
) -> dict[str, Path]:
    """A training file of 64 chat rows and a disjoint validation file of 16."""
    folder = tmp_path_factory.mktemp("data")
    train, val = folder / "train.jsonl", folder / "val.jsonl"
    train.write_text("\n".join(chat_rows[:64]) + "\n", encoding="utf-8")
    val.write_text("\n".join(chat_rows[64:80]) + "\n", encoding="utf-8")
    return {"train": train, "val": val}


def job_dict(model: Path, train: Path, **overrides: Any) -> dict[str, Any]:
    """A job.json as the operator writes it; `overrides` replace top-level sections."""
    job: dict[str, Any] = {
        "apiVersion": "sovereign-ai.eu/v1alpha1",
        "kind": "TrainingConfig",
        "job": {
            "namespace": "team-a",
            "name": "eu-dp-chat",
            "uid": "6f1c2d3e-aaaa-bbbb-cccc-0123456789ab",
        },
        "baseModel": {"uri": str(model), "revision": None},
        "dataset": {
            "trainingUri": str(train),
            "validationUri": None,
            "format": "chat",
            "sha256": None,
        },
        "method": {
            "type": "full",
            "hyperparameters": {
                "epochs": 1,
                "batchSize": 4,
                "microBatchSize": 1,
                "learningRate": 0.003,
                "maxSeqLength": 256,
                "warmupRatio": 0.1,
                "seed": 11,
            },
            "lora": None,
            "mergeAdapter": False,
        },
        "resources": {"workers": 2, "gpusPerWorker": 0},
        "tracking": {"experimentName": "eu-dp", "registeredModelName": "eu-dp-chat"},
        "output": {"uri": None},
        "checkpointing": {"everySteps": 4, "keep": 2, "maxFailures": 0},
        "placement": {"regions": ["eu-central-1", "eu-west-1"]},
    }
    job.update(overrides)
    return job


@pytest.fixture
def write_job(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    def write(job: dict[str, Any]) -> Path:
        path = tmp_path / "job.json"
        path.write_text(json.dumps(job), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One local Ray for the whole tier (2 CPUs). Workers inherit the node identity that the
    operator sets through the downward API in a cluster. Its session folder is the test's
    (Ray's default, /tmp/ray, outlives every run)."""
    os.environ["SOVAI_NODE_NAME"] = NODE_NAME
    os.environ["SOVAI_NODE_REGION"] = NODE_REGION
    os.environ["RAY_DISABLE_WORKER_LOG_PREFIX"] = "1"
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=True,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
    )
    try:
        yield
    finally:
        ray.shutdown()
