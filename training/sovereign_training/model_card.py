"""The Markdown model card stored with each registered model version (README.md)."""

from __future__ import annotations

from typing import Any

from .config import TrainingConfig
from .tracking import redact_uri


def render_card(
    cfg: TrainingConfig,
    *,
    base_revision: str,
    dataset_sha256: dict[str, str],
    nodes: list[dict[str, str]],
    metrics: dict[str, Any],
    run_id: str,
    artifact_kind: str,
) -> str:
    """A model card: what was trained from what, where, how, and how it went."""
    hp = cfg.method.hyperparameters
    lora = cfg.method.lora
    where = ", ".join(f"{n['node']} ({n['region']})" for n in nodes) or "unknown"
    lines = [
        f"# {cfg.tracking.registered_model_name}",
        "",
        f"Fine-tuned by the Sovereign AI Operator for FineTuneJob "
        f"`{cfg.job.namespace}/{cfg.job.name}` (uid `{cfg.job.uid}`), MLflow run `{run_id}`.",
        "",
        "## Lineage",
        f"- Base model: `{redact_uri(cfg.base_model.uri)}`"
        + (f" (revision `{base_revision}`)" if base_revision else " (no revision: a folder)"),
        f"- Training data: `{redact_uri(cfg.dataset.training_uri)}`, format "
        f"`{cfg.dataset.format.value}`, sha256 `{dataset_sha256.get('training', '')}`",
    ]
    if cfg.dataset.validation_uri:
        lines.append(
            f"- Validation data: `{redact_uri(cfg.dataset.validation_uri)}`, sha256 "
            f"`{dataset_sha256.get('validation', '')}`"
        )
    lines += [
        f"- Trained on: {where}",
        f"- Allowed regions: {', '.join(cfg.placement.regions) or 'not restricted'}",
        "",
        "## Method",
        f"- Type: `{cfg.method.type}`"
        + (", merged into the base weights" if lora and cfg.method.merge_adapter else ""),
        f"- Contents of this version: {artifact_kind}",
        f"- Epochs {hp.epochs}, batch size {hp.batch_size} (micro-batch {hp.micro_batch_size}), "
        f"learning rate {hp.learning_rate}, max sequence length {hp.max_seq_length}, "
        f"warm-up ratio {hp.warmup_ratio}, seed {hp.seed}",
    ]
    if lora:
        lines.append(
            f"- LoRA rank {lora.rank}, alpha {lora.alpha}, dropout {lora.dropout}, "
            f"target modules {', '.join(lora.target_modules)}"
        )
    lines += [
        f"- Workers {cfg.resources.workers}, GPUs per worker {cfg.resources.gpus_per_worker}",
        "",
        "## Results",
        f"- Steps: {metrics.get('steps')}",
        f"- Tokens trained: {metrics.get('tokensTrained')}",
        f"- GPU-hours: {metrics.get('gpuHours')}",
        f"- Final training loss: {metrics.get('trainLoss')}",
        f"- Final evaluation loss: {metrics.get('evalLoss')}",
        "",
        "## Intended use and limits",
        "Produced by an automated fine-tuning job. Evaluate it on your own task before use; the",
        "training data's licence and personal-data status follow the dataset named above.",
        "",
    ]
    return "\n".join(lines)
