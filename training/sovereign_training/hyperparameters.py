"""The rules that turn "auto" hyperparameters into the values a job trains with.

One place for both sides of the contract: the trainer applies them once it knows the dataset's
size, and reports what it chose (SOVAI_PROGRESS and SOVAI_RESULT, "hyperparameters"); the
operator applies them without a size, to refuse explicit values that cannot work together
before anything runs. Pure: no I/O, no torch (the operator imports it).

- epochs "auto": about 3000 examples seen in total, round(3000 / n) clamped to 1..10; 3 when
  the dataset size n is unknown.
- batchSize "auto": the largest power of two <= n / 100, clamped to 4..64; 8 when n is
  unknown. Then rounded up to a multiple of workers x microBatchSize (with microBatchSize
  "auto": workers x 4 for lora, workers x 2 for full).
- microBatchSize "auto": the largest power of two <= 4 (lora) or 2 (full) that divides
  batchSize / workers.
- learningRate "auto": 2e-4 for lora, 1e-5 for full (it does not depend on the data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

AUTO: Final = "auto"
Auto = Literal["auto"]
# The hyperparameters whose "auto" depends on the dataset's size: the trainer resolves them.
DATA_DEPENDENT: Final = ("epochs", "batchSize", "microBatchSize")

AUTO_EPOCHS_UNKNOWN_SIZE: Final = 3
AUTO_EPOCHS_TARGET_EXAMPLES: Final = 3000
AUTO_EPOCHS_RANGE: Final = (1, 10)
AUTO_BATCH_UNKNOWN_SIZE: Final = 8
AUTO_BATCH_RANGE: Final = (4, 64)
AUTO_MICRO_BATCH_CAP: Final = {"lora": 4, "full": 2}
AUTO_LEARNING_RATE: Final = {"lora": 2e-4, "full": 1e-5}


class HyperparameterError(ValueError):
    """Explicit hyperparameters that cannot work together; ``field`` names the first one
    (by its key in method.hyperparameters)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class BatchPlan:
    """Epochs, global batch and per-worker micro-batch, every "auto" resolved."""

    epochs: int
    batch_size: int
    micro_batch_size: int


def _clamp(value: int, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(bounds[1], value))


def _pow2_floor(value: int) -> int:
    return 1 << (max(1, value).bit_length() - 1)


def learning_rate(value: float | Auto, method: str) -> float:
    """The learning rate: as given, or the method's default."""
    return AUTO_LEARNING_RATE[method] if value == AUTO else float(value)


def plan_batches(
    epochs: int | Auto,
    batch_size: int | Auto,
    micro_batch_size: int | Auto,
    *,
    method: str,
    workers: int,
    examples: int | None,
) -> BatchPlan:
    """Resolve epochs, batchSize and microBatchSize for ``workers`` workers and a training
    set of ``examples`` examples (None: not known yet, and the sizes' defaults apply).

    Raises HyperparameterError when explicit values contradict each other."""
    if examples is not None and examples < 1:
        raise ValueError(f"examples must be >= 1, got {examples}")
    n = examples
    if epochs != AUTO:
        chosen_epochs = int(epochs)
    elif n is None:
        chosen_epochs = AUTO_EPOCHS_UNKNOWN_SIZE
    else:
        chosen_epochs = _clamp(round(AUTO_EPOCHS_TARGET_EXAMPLES / n), AUTO_EPOCHS_RANGE)

    explicit_micro = None if micro_batch_size == AUTO else int(micro_batch_size)
    if batch_size == AUTO:
        batch = (
            AUTO_BATCH_UNKNOWN_SIZE
            if n is None
            else _clamp(_pow2_floor(n // 100), AUTO_BATCH_RANGE)
        )
        # A multiple of workers x micro-batch, so that every worker gets whole micro-batches.
        step = workers * (explicit_micro or AUTO_MICRO_BATCH_CAP[method])
        batch = math.ceil(batch / step) * step
    else:
        batch = int(batch_size)
        if batch % workers:
            raise HyperparameterError(
                "batchSize", f"{batch} is not a multiple of resources.workers ({workers})"
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
                "batchSize",
                f"{batch} is not a multiple of resources.workers x microBatchSize "
                f"({workers} x {micro})",
            )
    return BatchPlan(chosen_epochs, batch, micro)
