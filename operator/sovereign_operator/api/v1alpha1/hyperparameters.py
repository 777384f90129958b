"""Hyperparameters as the operator sees them before the job runs.

The rules for "auto" live with the trainer (sovereign_training.hyperparameters), which applies
them once it knows the dataset's size and reports what it chose; the operator reports those
values in status.resolvedHyperparameters. Here the same rules run without a size: to refuse
explicit values that cannot work together before anything is made, and to say in status what
is already fixed (docs/api.md).
"""

from __future__ import annotations

from sovereign_training import hyperparameters as rules

from .finetunejob import FineTuneJobSpec, ResolvedHyperparameters

FIELD_PREFIX = "spec.method.hyperparameters."


class HyperparameterError(ValueError):
    """Explicit hyperparameters that cannot work together; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def data_dependent_autos(spec: FineTuneJobSpec) -> tuple[str, ...]:
    """The hyperparameters left "auto" whose value depends on the dataset's size: the trainer
    chooses them."""
    hp = spec.method.hyperparameters
    values = {
        "epochs": hp.epochs,
        "batchSize": hp.batch_size,
        "microBatchSize": hp.micro_batch_size,
    }
    return tuple(name for name in rules.DATA_DEPENDENT if values[name] == rules.AUTO)


def resolve_hyperparameters(
    spec: FineTuneJobSpec, dataset_size_hint: int | None = None
) -> ResolvedHyperparameters:
    """Every "auto" in spec.method.hyperparameters replaced by a concrete value, for a dataset
    of ``dataset_size_hint`` training examples (None: unknown, so the rules' defaults for an
    unknown size). Pure. Raises HyperparameterError when explicit values contradict each
    other (the CRD's CEL rule rejects the same at admission)."""
    if dataset_size_hint is not None and dataset_size_hint < 1:
        raise ValueError(f"dataset_size_hint must be >= 1, got {dataset_size_hint}")
    hp = spec.method.hyperparameters
    method = spec.method.type.value
    try:
        plan = rules.plan_batches(
            hp.epochs,
            hp.batch_size,
            hp.micro_batch_size,
            method=method,
            workers=spec.resources.workers,
            examples=dataset_size_hint,
        )
    except rules.HyperparameterError as error:
        message = error.message.replace("resources.workers", "spec.resources.workers")
        raise HyperparameterError(FIELD_PREFIX + error.field, message) from error
    return ResolvedHyperparameters(
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        micro_batch_size=plan.micro_batch_size,
        learning_rate=rules.learning_rate(hp.learning_rate, method),
        max_seq_length=hp.max_seq_length,
        warmup_ratio=hp.warmup_ratio,
        seed=hp.seed,
    )
