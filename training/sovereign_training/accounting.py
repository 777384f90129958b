"""Compute and energy accounting of a fine-tune: what the AI Act's Annex XI asks a GPAI model's
provider to document (training compute, energy), and the fine-tune's share of its base model's
training compute (the Commission's guidelines make whoever modifies a GPAI model with more than
a third of its original training compute the provider of the modified model).

The figures (docs/training.md, "Compute and energy"):
- wall seconds: from the driver's start to the final model's save, data loading, model load,
  evaluation and checkpoints included; a restarted driver adds the time of the drivers before
  it up to their last checkpoint (see `earlier_wall_seconds`);
- GPU-hours = wall seconds x workers x GPUs per worker / 3600 (0 for CPU workers);
- CPU core-hours, for CPU workers only = wall seconds x workers x compute threads per worker /
  3600;
- training FLOPs = FLOPs per token (flops.flops_per_token: 6N + 12·L·h·s for a full fine-tune,
  4N + 8·L·h·s for LoRA, backward pass included) x tokens trained;
- energy (kWh) = GPU-hours x the GPU's board power (TDP, W) / 1000 x PUE; not estimated for CPU
  workers, nor for a GPU whose board power is not in the table;
- base compute ratio = training FLOPs / the base model's training FLOPs, where these are known.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import flops

# The base model's config.json key read for its training compute in FLOP, when the trainer's
# config declares none.
BASE_FLOPS_KEY = "training_flops"
BASE_FLOPS_FIELD = "baseModel.trainingFlops"

# Board power (TDP, maximum power) in W, from the vendors' data sheets, matched on the device
# name like flops.gpu_peak_flops: every part of a key must occur, the more specific keys come
# first. None: the name covers boards of different power (a GH200 module's power is configured
# per system and includes its CPU), so no figure is assumed.
_BOARD_WATTS: list[tuple[tuple[str, ...], float | None]] = [
    (("GH200",), None),
    (("H200", "NVL"), 600.0),
    (("H200",), 700.0),
    (("H100", "PCIE"), 350.0),
    (("H100", "NVL"), 400.0),
    (("H100",), 700.0),
    (("A100", "PCIE", "40GB"), 250.0),
    (("A100", "PCIE"), 300.0),
    (("A100",), 400.0),
    (("L40S",), 350.0),
    (("L40",), 300.0),
    (("L4",), 72.0),
]


def gpu_board_watts(device_name: str) -> float | None:
    """The board's power in W, or None when the board is not known."""
    upper = device_name.upper()
    for parts, watts in _BOARD_WATTS:
        if all(part in upper for part in parts):
            return watts
    return None


def _positive(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def base_training_flops(declared: float | None, model_dir: Path) -> tuple[float | None, str | None]:
    """(FLOPs, where the figure came from) of the base model's own training, or (None, None).

    The trainer's config (baseModel.trainingFlops) comes first, then the `training_flops` key of
    the base model's config.json (a positive number, or a string holding one)."""
    if declared is not None:
        return declared, BASE_FLOPS_FIELD
    try:
        meta = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    value = _positive(meta.get(BASE_FLOPS_KEY)) if isinstance(meta, dict) else None
    return (value, f"config.json {BASE_FLOPS_KEY}") if value is not None else (None, None)


def earlier_wall_seconds(counters: dict[str, Any], driver_started_at: float) -> float:
    """Wall seconds of earlier drivers, from the counters of the checkpoint resumed from.

    A worker group restarted by the same driver counts from that driver's start again (the
    time the lost group held its GPUs is counted); a new driver adds the wall time up to the
    checkpoint (the time after it, in the driver that died, is not known and not counted).
    Checkpoints written before the wall time was kept give their step time."""
    if counters.get("driverStartedAt") == driver_started_at:
        return float(counters.get("earlierWallSeconds", 0.0))
    return float(counters.get("wallSeconds", counters.get("seconds", 0.0)))


def _energy(gpu_hours: float, gpu_name: str | None, pue: float | None) -> tuple[float | None, str]:
    if gpu_name is None:
        return None, "not estimated for CPU workers: no per-core power figure is assumed"
    watts = gpu_board_watts(gpu_name)
    if watts is None:
        return None, f"not estimated: no board power is known for the GPU {gpu_name!r}"
    factor = 1.0 if pue is None else pue
    overhead = (
        "no PUE given: the GPUs' own energy, without the data centre's overhead"
        if pue is None
        else f"PUE {pue:g} for the data centre's overhead"
    )
    method = (
        f"GPU-hours x {watts:g} W (board power, TDP, of the {gpu_name}) / 1000 x {factor:g} "
        f"({overhead}); an upper bound for the GPUs, which draw less than TDP while loading or "
        "waiting; CPUs, memory and network are not counted"
    )
    return gpu_hours * watts / 1000.0 * factor, method


def account(
    *,
    wall_seconds: float,
    workers: int,
    gpus_per_worker: int,
    gpu_name: str | None,
    cpu_threads_per_worker: int,
    tokens: int,
    params: int,
    layers: int,
    hidden: int,
    seq: int,
    lora: bool,
    pue: float | None,
    base_flops: float | None,
    base_flops_source: str | None,
) -> dict[str, Any]:
    """The job's compute figures as the result carries them (result["compute"], camelCase).

    `gpu_name` is the workers' GPU (None for CPU workers); workers are taken to be alike."""
    wall = max(0.0, wall_seconds)
    gpu_hours = wall * workers * gpus_per_worker / 3600.0
    cpu = gpus_per_worker == 0
    per_token = flops.flops_per_token(params, layers, hidden, seq, lora=lora)
    training_flops = per_token * tokens
    energy, energy_method = _energy(gpu_hours, None if cpu else gpu_name, pue)
    kind = "LoRA: 4N + 8·L·h·s" if lora else "full fine-tune: 6N + 12·L·h·s"
    flops_method = (
        f"FLOPs per token x tokens trained; per token {kind} (forward and backward) with "
        f"N = {params} parameters, L = {layers} layers, h = {hidden}, s = {seq}; model FLOPs: "
        "recomputation (gradient checkpointing), padding and evaluation are not counted"
    )
    base = base_flops if base_flops is not None and base_flops > 0 else None
    return {
        "wallSeconds": round(wall, 3),
        "workers": workers,
        "gpusPerWorker": gpus_per_worker,
        "gpuModel": None if cpu else gpu_name,
        "gpuHours": round(gpu_hours, 6),
        "cpuThreadsPerWorker": cpu_threads_per_worker if cpu else None,
        "cpuCoreHours": round(wall * workers * cpu_threads_per_worker / 3600.0, 6) if cpu else None,
        "tokens": tokens,
        "flopsPerToken": per_token,
        "trainingFlops": training_flops,
        "flopsMethod": flops_method,
        "energyKwh": None if energy is None else round(energy, 6),
        "energyMethod": energy_method,
        "pue": pue,
        "baseModelTrainingFlops": base,
        "baseModelTrainingFlopsSource": base_flops_source if base else None,
        "baseComputeRatio": training_flops / base if base else None,
        # "More than a third", compared as 3·x > base rather than on a rounded ratio.
        "exceedsOneThird": 3.0 * training_flops > base if base else None,
    }


def compute_tags(compute: dict[str, Any]) -> dict[str, str]:
    """The MLflow tags of the figures (sovai.compute.*, sovai.base_model.training_flops*);
    figures that are not known get no tag, methods always get one."""
    names = {
        "wallSeconds": "sovai.compute.wall_seconds",
        "workers": "sovai.compute.workers",
        "gpusPerWorker": "sovai.compute.gpus_per_worker",
        "gpuModel": "sovai.compute.gpu_model",
        "cpuCoreHours": "sovai.compute.cpu_core_hours",
        "trainingFlops": "sovai.compute.training_flops",
        "flopsMethod": "sovai.compute.flops_method",
        "energyKwh": "sovai.compute.energy_kwh",
        "energyMethod": "sovai.compute.energy_method",
        "pue": "sovai.compute.pue",
        "baseModelTrainingFlops": "sovai.base_model.training_flops",
        "baseModelTrainingFlopsSource": "sovai.base_model.training_flops_source",
        "baseComputeRatio": "sovai.compute.base_ratio",
        "exceedsOneThird": "sovai.compute.exceeds_one_third",
    }
    tags: dict[str, str] = {}
    for key, tag in names.items():
        value = compute.get(key)
        if value is None:
            continue
        if isinstance(value, bool):
            tags[tag] = str(value).lower()
        elif key in ("trainingFlops", "baseModelTrainingFlops", "baseComputeRatio"):
            tags[tag] = f"{float(value):.6e}"
        else:
            tags[tag] = str(value)
    return tags
