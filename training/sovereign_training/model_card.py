"""The Markdown model card stored with each registered model version (README.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import TrainingConfig
from .tracking import redact_uri

if TYPE_CHECKING:
    from .data import Blocks

NOT_RECORDED = "not recorded"


def data_entry(role: str, uri: str | None, sha256: str, fmt: str, blocks: Blocks) -> dict[str, Any]:
    """What the card says of one dataset: its redacted URI, sha256 and what the trainer read."""
    return {
        "role": role,
        "uri": redact_uri(uri),
        "sha256": sha256,
        "format": fmt,
        "rows": blocks.stats.rows,
        "truncated": blocks.stats.truncated,
        "dropped": blocks.stats.dropped,
        "tokens": int(blocks.real_tokens.sum()),
        "sequences": len(blocks),
        "maxSeqLength": int(blocks.input_ids.shape[1]),
    }


def _data_lines(data: list[dict[str, Any]]) -> list[str]:
    lines = ["## Data"]
    for d in data:
        lines += [
            f"- {d['role'].capitalize()} data: `{d['uri']}`, format `{d['format']}`, "
            f"sha256 `{d['sha256']}`",
            f"  - {d['rows']} rows read: {d['truncated']} cut to {d['maxSeqLength']} tokens, "
            f"{d['dropped']} dropped (no token left to learn from); {d['tokens']} tokens packed "
            f"into {d['sequences']} sequences of {d['maxSeqLength']}",
        ]
    return lines


def _flop(value: Any) -> str:
    return f"{float(value):.3e} FLOP"


def _compute_lines(c: dict[str, Any]) -> list[str]:
    lines = [
        "## Compute and energy",
        f"- Wall time: {c['wallSeconds']} s, from the driver's start to the final model's save "
        f"(data loading, model load, evaluation and checkpoints included)",
        f"- GPU-hours: {c['gpuHours']} (wall time x {c['workers']} workers x "
        f"{c['gpusPerWorker']} GPUs per worker)",
    ]
    if c.get("cpuCoreHours") is not None:
        lines.append(
            f"- CPU core-hours: {c['cpuCoreHours']} (wall time x {c['workers']} workers x "
            f"{c['cpuThreadsPerWorker']} compute threads per worker)"
        )
    lines.append(f"- Training compute: {_flop(c['trainingFlops'])} ({c['flopsMethod']})")
    energy = c.get("energyKwh")
    lines.append(
        f"- Energy: {energy} kWh ({c['energyMethod']})"
        if energy is not None
        else f"- Energy: {c['energyMethod']}"
    )
    base, ratio = c.get("baseModelTrainingFlops"), c.get("baseComputeRatio")
    if base is not None and ratio is not None:
        verdict = (
            "more than one third: under the Commission's guidelines on general-purpose AI "
            "models, whoever made this modification is the provider of the modified model"
            if c.get("exceedsOneThird")
            else "not more than one third"
        )
        lines.append(
            f"- Share of the base model's training compute ({_flop(base)}, from "
            f"{c.get('baseModelTrainingFlopsSource')}): {ratio:.4g}, {verdict}"
        )
    else:
        lines.append(
            "- Share of the base model's training compute: not known (the base model's training "
            "compute is not declared)"
        )
    return lines


def render_card(
    cfg: TrainingConfig,
    *,
    base_revision: str,
    nodes: list[dict[str, str]],
    metrics: dict[str, Any],
    run_id: str,
    artifact_kind: str,
    data: list[dict[str, Any]],
    compute: dict[str, Any],
) -> str:
    """A model card: what was trained from what, where, how, and how it went, with what
    Annex XI/XII-style documentation asks for that the trainer knows: data sources, compute,
    energy, where it ran, the policy and the audit chain head. `data` holds data_entry()s,
    `compute` the figures of accounting.account()."""
    hp = cfg.method.hyperparameters
    lora = cfg.method.lora
    where = ", ".join(f"{n['node']} ({n['region']})" for n in nodes) or "unknown"
    regions = ", ".join(sorted({n["region"] for n in nodes})) or "unknown"
    gpus = compute["gpusPerWorker"]
    accelerator = f"{compute.get('gpuModel') or 'GPU'}, {gpus} per worker" if gpus else "CPU"
    lines = [
        f"# {cfg.tracking.registered_model_name}",
        "",
        f"Fine-tuned by the Sovereign AI Operator for FineTuneJob "
        f"`{cfg.job.namespace}/{cfg.job.name}` (uid `{cfg.job.uid}`), MLflow run `{run_id}`.",
        "",
        "## Lineage",
        f"- Base model: `{redact_uri(cfg.base_model.uri)}`"
        + (f" (revision `{base_revision}`)" if base_revision else " (no revision: a folder)"),
        "",
        *_data_lines(data),
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
        f"- Final training loss: {metrics.get('trainLoss')}",
        f"- Final evaluation loss: {metrics.get('evalLoss')}",
        "",
        *_compute_lines(compute),
        "",
        "## Where it ran",
        f"- Trained on: {where}",
        f"- Regions: {regions}",
        f"- Allowed regions: {', '.join(cfg.placement.regions) or 'not restricted'}",
        f"- Accelerator: {accelerator}",
        "",
        "## Policy",
        "- SovereigntyPolicy: "
        + (f"`{cfg.placement.policy_name}`" if cfg.placement.policy_name else NOT_RECORDED),
        "",
        "## Audit",
        "- Audit chain head when the job was submitted: "
        + (f"`{cfg.audit.chain_head}`" if cfg.audit.chain_head else NOT_RECORDED),
        "",
        "## Intended use and limits",
        "Produced by an automated fine-tuning job. Evaluate it on your own task before use; the",
        "training data's licence and personal-data status follow the datasets named above.",
        "",
    ]
    return "\n".join(lines)
