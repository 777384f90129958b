"""Compute and energy accounting (accounting.py) on fixed inputs, and the model card's sections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sovereign_training import accounting, flops
from sovereign_training.config import ConfigError, parse_config
from sovereign_training.data import Encoded, EncodeStats, pack_encoded
from sovereign_training.model_card import data_entry, render_card

from .conftest import job_dict

pytestmark = pytest.mark.training

SHA = "ab" * 32
# Llama 3.2 1B's shape: the figures below are checked by hand against flops.py's formulas.
MODEL = {"params": 1_235_814_400, "layers": 16, "hidden": 2048, "seq": 2048}


def figures(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "wall_seconds": 3600.0,
        "workers": 2,
        "gpus_per_worker": 8,
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "cpu_threads_per_worker": 4,
        "tokens": 1_000_000,
        **MODEL,
        "lora": False,
        "pue": None,
        "base_flops": None,
        "base_flops_source": None,
    }
    return accounting.account(**(args | overrides))


@pytest.mark.parametrize(
    ("name", "watts"),
    [
        ("NVIDIA H100 80GB HBM3", 700.0),
        ("NVIDIA H100 PCIe", 350.0),
        ("NVIDIA H100 NVL", 400.0),
        ("NVIDIA H200", 700.0),
        ("NVIDIA H200 NVL", 600.0),
        ("NVIDIA GH200 480GB", None),  # module power includes the CPU and varies by system
        ("NVIDIA A100-SXM4-80GB", 400.0),
        ("NVIDIA A100-PCIE-40GB", 250.0),
        ("NVIDIA A100 80GB PCIe", 300.0),
        ("NVIDIA L40S", 350.0),
        ("NVIDIA L40", 300.0),
        ("NVIDIA L4", 72.0),
        ("AMD Instinct MI300X", None),
    ],
)
def test_board_power_by_device_name(name: str, watts: float | None) -> None:
    assert accounting.gpu_board_watts(name) == watts


def test_gpu_job_figures() -> None:
    per_token = 6.0 * 1_235_814_400 + 12.0 * 16 * 2048 * 2048
    method = (
        "FLOPs per token x tokens trained; per token full fine-tune: 6N + 12·L·h·s (forward and "
        "backward) with N = 1235814400 parameters, L = 16 layers, h = 2048, s = 2048; model "
        "FLOPs: recomputation (gradient checkpointing), padding and evaluation are not counted"
    )
    assert figures() == {
        "wallSeconds": 3600.0,
        "workers": 2,
        "gpusPerWorker": 8,
        "gpuModel": "NVIDIA H100 80GB HBM3",
        "gpuHours": 16.0,  # 1 h x 2 workers x 8 GPUs
        "cpuThreadsPerWorker": None,
        "cpuCoreHours": None,
        "tokens": 1_000_000,
        "flopsPerToken": per_token,
        "trainingFlops": per_token * 1_000_000,
        "flopsMethod": method,
        "energyKwh": 11.2,  # 16 GPU-hours x 0.7 kW
        "energyMethod": (
            "GPU-hours x 700 W (board power, TDP, of the NVIDIA H100 80GB HBM3) / 1000 x 1 (no "
            "PUE given: the GPUs' own energy, without the data centre's overhead); an upper "
            "bound for the GPUs, which draw less than TDP while loading or waiting; CPUs, "
            "memory and network are not counted"
        ),
        "pue": None,
        "baseModelTrainingFlops": None,
        "baseModelTrainingFlopsSource": None,
        "baseComputeRatio": None,
        "exceedsOneThird": None,
    }


def test_pue_scales_the_energy_and_is_named() -> None:
    out = figures(pue=1.25)
    assert out["energyKwh"] == pytest.approx(16 * 0.7 * 1.25)
    assert "x 1.25 (PUE 1.25 for the data centre's overhead)" in out["energyMethod"]


def test_lora_counts_no_weight_gradients_for_the_base() -> None:
    out = figures(lora=True, tokens=10)
    assert out["trainingFlops"] == 10 * (4.0 * 1_235_814_400 + 8.0 * 16 * 2048 * 2048)
    assert out["trainingFlops"] == 10 * flops.flops_per_token(
        1_235_814_400, 16, 2048, 2048, lora=True
    )
    assert "LoRA: 4N + 8·L·h·s" in out["flopsMethod"]


def test_cpu_job_reports_core_hours_and_no_energy() -> None:
    out = figures(gpus_per_worker=0, gpu_name=None, wall_seconds=1800.0, cpu_threads_per_worker=3)
    assert (out["gpuHours"], out["gpuModel"]) == (0.0, None)
    assert (out["cpuThreadsPerWorker"], out["cpuCoreHours"]) == (3, 3.0)  # 0.5 h x 2 x 3
    assert out["energyKwh"] is None
    assert out["energyMethod"] == (
        "not estimated for CPU workers: no per-core power figure is assumed"
    )


def test_unknown_gpu_gets_no_energy_figure() -> None:
    out = figures(gpu_name="Some Accelerator 9000")
    assert out["gpuHours"] == 16.0
    assert out["energyKwh"] is None
    assert out["energyMethod"] == (
        "not estimated: no board power is known for the GPU 'Some Accelerator 9000'"
    )


@pytest.mark.parametrize(
    ("base_multiple", "exceeds"),
    [(2.0, True), (3.0, False), (2.999, True), (1000.0, False)],
)
def test_ratio_to_the_base_and_the_one_third_rule(base_multiple: float, exceeds: bool) -> None:
    """More than a third exceeds; exactly a third does not."""
    training = figures()["trainingFlops"]
    out = figures(base_flops=training * base_multiple, base_flops_source="baseModel.trainingFlops")
    assert out["baseComputeRatio"] == pytest.approx(1 / base_multiple)
    assert out["exceedsOneThird"] is exceeds
    assert out["baseModelTrainingFlopsSource"] == "baseModel.trainingFlops"


def test_base_compute_comes_from_the_config_then_the_models_config_json(tmp_path: Path) -> None:
    assert accounting.base_training_flops(None, tmp_path) == (None, None)  # no config.json
    (tmp_path / "config.json").write_text(json.dumps({"training_flops": 9.1e23}))
    assert accounting.base_training_flops(None, tmp_path) == (9.1e23, "config.json training_flops")
    assert accounting.base_training_flops(2e24, tmp_path) == (2e24, "baseModel.trainingFlops")
    (tmp_path / "config.json").write_text(json.dumps({"training_flops": "3.8e25"}))
    assert accounting.base_training_flops(None, tmp_path) == (3.8e25, "config.json training_flops")


@pytest.mark.parametrize("value", [-1, 0, True, "lots", None, [1e23], float("inf")])
def test_unusable_declared_base_compute_is_not_known(tmp_path: Path, value: object) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"training_flops": value}))
    assert accounting.base_training_flops(None, tmp_path) == (None, None)


def test_wall_time_across_restarts() -> None:
    # A fresh start: nothing earlier.
    assert accounting.earlier_wall_seconds({"step": 0, "seconds": 0.0}, 1000.0) == 0.0
    checkpoint = {
        "seconds": 50.0,
        "wallSeconds": 300.0,
        "earlierWallSeconds": 120.0,
        "driverStartedAt": 1000.0,
    }
    # The same driver restarted its workers: its own time counts from its start again.
    assert accounting.earlier_wall_seconds(checkpoint, 1000.0) == 120.0
    # A new driver: everything up to the checkpoint.
    assert accounting.earlier_wall_seconds(checkpoint, 2000.0) == 300.0
    # A checkpoint from before wall time was kept: its step time.
    assert accounting.earlier_wall_seconds({"seconds": 50.0}, 2000.0) == 50.0


def test_tags_carry_the_known_figures() -> None:
    training = figures()["trainingFlops"]
    out = figures(pue=1.2, base_flops=training * 2, base_flops_source="config.json training_flops")
    tags = accounting.compute_tags(out)
    assert tags == {
        "sovai.compute.wall_seconds": "3600.0",
        "sovai.compute.workers": "2",
        "sovai.compute.gpus_per_worker": "8",
        "sovai.compute.gpu_model": "NVIDIA H100 80GB HBM3",
        "sovai.compute.training_flops": f"{training:.6e}",
        "sovai.compute.flops_method": out["flopsMethod"],
        "sovai.compute.energy_kwh": "13.44",
        "sovai.compute.energy_method": out["energyMethod"],
        "sovai.compute.pue": "1.2",
        "sovai.base_model.training_flops": f"{training * 2:.6e}",
        "sovai.base_model.training_flops_source": "config.json training_flops",
        "sovai.compute.base_ratio": "5.000000e-01",
        "sovai.compute.exceeds_one_third": "true",
    }
    cpu = accounting.compute_tags(figures(gpus_per_worker=0, gpu_name=None))
    assert cpu["sovai.compute.cpu_core_hours"] == "8.0"
    assert "sovai.compute.energy_kwh" not in cpu
    assert "sovai.compute.base_ratio" not in cpu


def test_data_entry_counts_rows_and_tokens() -> None:
    encoded = [Encoded([1, 2, 3], [-100, 2, 3]), Encoded([4, 5], [-100, 5]), Encoded([6], [6])]
    blocks = pack_encoded(encoded, 4, 0, EncodeStats(rows=5, truncated=1, dropped=2))
    entry = data_entry("training", "s3://eu-data/t.jsonl", SHA, "chat", blocks)
    assert entry == {
        "role": "training",
        "uri": "s3://eu-data/t.jsonl",
        "sha256": SHA,
        "format": "chat",
        "rows": 5,
        "truncated": 1,
        "dropped": 2,
        "tokens": 6,
        "sequences": 2,
        "maxSeqLength": 4,
    }


def _card(tiny: Path, **config: Any) -> str:
    job = job_dict(tiny, tiny / "train.jsonl", **config)
    data = [
        {
            "role": "training",
            "uri": "s3://eu-data/t.jsonl",
            "sha256": SHA,
            "format": "chat",
            "rows": 64,
            "truncated": 1,
            "dropped": 0,
            "tokens": 9000,
            "sequences": 40,
            "maxSeqLength": 256,
        }
    ]
    training = figures()["trainingFlops"]
    compute = figures(base_flops=training * 2, base_flops_source="baseModel.trainingFlops")
    return render_card(
        parse_config(job),
        base_revision="",
        nodes=[{"node": "gpu-1", "region": "eu-west-par"}, {"node": "gpu-2", "region": "eu-fra"}],
        metrics={"steps": 10, "tokensTrained": 1_000_000, "trainLoss": 1.0, "evalLoss": None},
        run_id="r1",
        artifact_kind="full model",
        data=data,
        compute=compute,
    )


def test_card_documents_data_compute_place_policy_and_audit(tmp_path: Path) -> None:
    placement = {"regions": ["eu-west-par"], "policyName": "eu-only"}
    card = _card(tmp_path, placement=placement, audit={"chainHead": "sha256:" + "cd" * 32})
    training = figures()["trainingFlops"]
    expected = [
        "## Data",
        f"- Training data: `s3://eu-data/t.jsonl`, format `chat`, sha256 `{SHA}`",
        "  - 64 rows read: 1 cut to 256 tokens, 0 dropped (no token left to learn from); 9000 "
        "tokens packed into 40 sequences of 256",
        "## Compute and energy",
        "- Wall time: 3600.0 s, from the driver's start to the final model's save (data loading, "
        "model load, evaluation and checkpoints included)",
        "- GPU-hours: 16.0 (wall time x 2 workers x 8 GPUs per worker)",
        f"- Training compute: {training:.3e} FLOP (FLOPs per token x tokens trained; per token "
        "full fine-tune: 6N + 12·L·h·s",
        "- Energy: 11.2 kWh (GPU-hours x 700 W (board power, TDP, of the NVIDIA H100 80GB HBM3)",
        f"- Share of the base model's training compute ({training * 2:.3e} FLOP, from "
        "baseModel.trainingFlops): 0.5, more than one third: under the Commission's guidelines "
        "on general-purpose AI models, whoever made this modification is the provider of the "
        "modified model",
        "## Where it ran",
        "- Trained on: gpu-1 (eu-west-par), gpu-2 (eu-fra)",
        "- Regions: eu-fra, eu-west-par",
        "- Allowed regions: eu-west-par",
        "- Accelerator: NVIDIA H100 80GB HBM3, 8 per worker",
        "## Policy\n- SovereigntyPolicy: `eu-only`",
        "## Audit\n- Audit chain head when the job was submitted: `sha256:" + "cd" * 32 + "`",
    ]
    for text in expected:
        assert text in card, text
    # Each section once, in this order.
    sections = [line for line in card.splitlines() if line.startswith("## ")]
    assert sections == [
        "## Lineage",
        "## Data",
        "## Method",
        "## Results",
        "## Compute and energy",
        "## Where it ran",
        "## Policy",
        "## Audit",
        "## Intended use and limits",
    ]


def test_card_says_what_was_not_recorded(tmp_path: Path) -> None:
    card = _card(tmp_path)
    assert "- SovereigntyPolicy: not recorded" in card
    assert "- Audit chain head when the job was submitted: not recorded" in card


@pytest.mark.parametrize(
    ("section", "value", "field"),
    [
        ("placement", {"regions": [], "policyName": "Not A Name"}, "placement.policyName"),
        ("audit", {"chainHead": "head with spaces"}, "audit.chainHead"),
        ("energy", {"pue": 0.8}, "energy.pue"),
    ],
)
def test_new_config_fields_refuse_bad_values(
    tmp_path: Path, section: str, value: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_config(job_dict(tmp_path, tmp_path / "t.jsonl", **{section: value}))


def test_declared_base_compute_must_be_positive(tmp_path: Path) -> None:
    job = job_dict(tmp_path, tmp_path / "t.jsonl")
    job["baseModel"]["trainingFlops"] = 0
    with pytest.raises(ConfigError, match=r"baseModel\.trainingFlops"):
        parse_config(job)
    job["baseModel"]["trainingFlops"] = 9.1e23
    assert parse_config(job).base_model.training_flops == 9.1e23
