"""resolve_hyperparameters: every "auto" rule, with and without a dataset size."""

from __future__ import annotations

from typing import Any

import pytest

from sovereign_operator.api.v1alpha1 import (
    FineTuneJobSpec,
    HyperparameterError,
    resolve_hyperparameters,
)


def spec(method: str = "lora", workers: int = 1, **hyperparameters: Any) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": "hf://mistralai/Mistral-7B-v0.3"},
            "dataset": {"trainingUri": "s3://eu-datasets-par/train.jsonl"},
            "method": {"type": method, "hyperparameters": hyperparameters},
            "resources": {"workers": workers},
        }
    )


@pytest.mark.parametrize(
    ("method", "workers", "size", "hp", "expected"),
    [
        # Unknown size: 3 epochs, batch 8, micro 4 (lora) / 2 (full).
        ("lora", 1, None, {}, (3, 8, 4, 2e-4)),
        ("full", 1, None, {}, (3, 8, 2, 1e-5)),
        # epochs ~ 3000 examples, clamped to 1..10; batch = pow2 <= n/100 in 4..64.
        ("lora", 1, 100, {}, (10, 4, 4, 2e-4)),
        ("lora", 1, 1000, {}, (3, 8, 4, 2e-4)),
        ("lora", 1, 5000, {}, (1, 32, 4, 2e-4)),
        ("lora", 1, 1_000_000, {}, (1, 64, 4, 2e-4)),
        # Batch rounded up to a multiple of workers x micro-batch.
        ("lora", 3, None, {}, (3, 12, 4, 2e-4)),
        ("full", 3, 5000, {}, (1, 36, 2, 1e-5)),
        ("lora", 2, None, {"microBatchSize": 3}, (3, 12, 3, 2e-4)),
        # Explicit batch: micro = largest power of two <= cap dividing batch / workers.
        ("lora", 2, None, {"batchSize": 12}, (3, 12, 2, 2e-4)),
        ("lora", 1, None, {"batchSize": 7}, (3, 7, 1, 2e-4)),
        # Explicit values are kept.
        (
            "lora",
            1,
            None,
            {"epochs": 2, "batchSize": 16, "microBatchSize": 8, "learningRate": "1e-3"},
            (2, 16, 8, 1e-3),
        ),
    ],
)
def test_auto_resolution(
    method: str,
    workers: int,
    size: int | None,
    hp: dict[str, Any],
    expected: tuple[int, int, int, float],
) -> None:
    resolved = resolve_hyperparameters(spec(method, workers, **hp), dataset_size_hint=size)
    assert (
        resolved.epochs,
        resolved.batch_size,
        resolved.micro_batch_size,
        resolved.learning_rate,
    ) == expected
    assert resolved.batch_size % (workers * resolved.micro_batch_size) == 0


def test_passthrough_fields_and_status_shape() -> None:
    resolved = resolve_hyperparameters(spec(maxSeqLength=512, warmupRatio=0.1, seed=7))
    assert resolved.to_json_dict() == {
        "epochs": 3,
        "batchSize": 8,
        "microBatchSize": 4,
        "learningRate": 0.0002,
        "maxSeqLength": 512,
        "warmupRatio": 0.1,
        "seed": 7,
    }


@pytest.mark.parametrize(
    ("workers", "hp", "message"),
    [
        (3, {"batchSize": 8}, "8 is not a multiple of spec.resources.workers (3)"),
        (2, {"batchSize": 12, "microBatchSize": 4}, "workers x microBatchSize (2 x 4)"),
    ],
)
def test_contradictions_name_the_field(workers: int, hp: dict[str, Any], message: str) -> None:
    with pytest.raises(HyperparameterError) as error:
        resolve_hyperparameters(spec("lora", workers, **hp))
    assert error.value.field == "spec.method.hyperparameters.batchSize"
    assert message in str(error.value)


def test_dataset_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="dataset_size_hint must be >= 1"):
        resolve_hyperparameters(spec(), dataset_size_hint=0)
