"""Resolution of "auto" hyperparameters to the concrete values a FineTuneJob trains with.

Rules (documented in docs/api.md; the operator records the result in
status.resolvedHyperparameters):

- epochs "auto": about 3000 examples seen in total, round(3000 / n) clamped to 1..10;
  3 when the dataset size n is unknown.
- batchSize "auto": the largest power of two <= n / 100, clamped to 4..64; 8 when n is
  unknown. Then rounded up to a multiple of workers x microBatchSize (with microBatchSize
  "auto": workers x 4 for lora, workers x 2 for full).
- microBatchSize "auto": the largest power of two <= 4 (lora) or 2 (full) that divides
  batchSize / workers.
- learningRate "auto": 2e-4 for lora, 1e-5 for full.
- maxSeqLength, warmupRatio and seed are copied.
"""

from __future__ import annotations

import math

from .finetunejob import FineTuneJobSpec, MethodType, ResolvedHyperparameters

AUTO_EPOCHS_UNKNOWN_SIZE = 3
AUTO_EPOCHS_TARGET_EXAMPLES = 3000
AUTO_EPOCHS_RANGE = (1, 10)
AUTO_BATCH_UNKNOWN_SIZE = 8
AUTO_BATCH_RANGE = (4, 64)
AUTO_MICRO_BATCH_CAP = {MethodType.LORA: 4, MethodType.FULL: 2}
AUTO_LEARNING_RATE = {MethodType.LORA: 2e-4, MethodType.FULL: 1e-5}


class HyperparameterError(ValueError):
    """Explicit hyperparameters that cannot work together; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _clamp(value: int, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(bounds[1], value))


def _pow2_floor(value: int) -> int:
    return 1 << (max(1, value).bit_length() - 1)


def resolve_hyperparameters(
    spec: FineTuneJobSpec, dataset_size_hint: int | None = None
) -> ResolvedHyperparameters:
    """Replace every "auto" in spec.method.hyperparameters by a concrete value.

    dataset_size_hint is the number of training examples, when known. Pure and deterministic.
    Raises HyperparameterError when explicit values contradict each other (the CRD's CEL rule
    rejects the same at admission).
    """
    if dataset_size_hint is not None and dataset_size_hint < 1:
        raise ValueError(f"dataset_size_hint must be >= 1, got {dataset_size_hint}")
    hp = spec.method.hyperparameters
    method = spec.method.type
    workers = spec.resources.workers
    n = dataset_size_hint

    if isinstance(hp.epochs, int):
        epochs = hp.epochs
    elif n is None:
        epochs = AUTO_EPOCHS_UNKNOWN_SIZE
    else:
        epochs = _clamp(round(AUTO_EPOCHS_TARGET_EXAMPLES / n), AUTO_EPOCHS_RANGE)

    explicit_micro = hp.micro_batch_size if isinstance(hp.micro_batch_size, int) else None
    if not isinstance(hp.batch_size, int):
        batch = (
            AUTO_BATCH_UNKNOWN_SIZE
            if n is None
            else _clamp(_pow2_floor(n // 100), AUTO_BATCH_RANGE)
        )
        # A multiple of workers x micro-batch, so that every worker gets whole micro-batches.
        step = workers * (explicit_micro or AUTO_MICRO_BATCH_CAP[method])
        batch = math.ceil(batch / step) * step
    else:
        batch = hp.batch_size
        if batch % workers:
            raise HyperparameterError(
                "spec.method.hyperparameters.batchSize",
                f"{batch} is not a multiple of spec.resources.workers ({workers})",
            )

    per_worker = batch // workers
    if explicit_micro is None:
        micro = _pow2_floor(min(AUTO_MICRO_BATCH_CAP[method], per_worker))
        while per_worker % micro:
            micro //= 2
    else:
        micro = explicit_micro
        if per_worker % micro:
            raise HyperparameterError(
                "spec.method.hyperparameters.batchSize",
                f"{batch} is not a multiple of spec.resources.workers x microBatchSize "
                f"({workers} x {micro})",
            )

    learning_rate = (
        hp.learning_rate if isinstance(hp.learning_rate, float) else AUTO_LEARNING_RATE[method]
    )

    return ResolvedHyperparameters(
        epochs=epochs,
        batch_size=batch,
        micro_batch_size=micro,
        learning_rate=learning_rate,
        max_seq_length=hp.max_seq_length,
        warmup_ratio=hp.warmup_ratio,
        seed=hp.seed,
    )
