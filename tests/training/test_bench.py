"""The throughput bench runs every row end to end (tiny preset, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sovereign_training.cli import main

pytestmark = pytest.mark.training


def test_bench_tiny_preset_measures_every_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rows.json"
    argv = ["bench", "--preset", "tiny", "--steps", "2", "--warmup", "1", "--json", str(out)]
    assert main(argv) == 0
    rows = {r["variant"]: r for r in json.loads(out.read_text())}
    assert list(rows) == [
        "plain-full",
        "plain-lora",
        "project-full",
        "project-lora",
        "plain-padded",
        "project-packed",
    ]
    assert all(r["error"] is None and r["tokens_per_second"] > 0 for r in rows.values())
    assert [rows[v]["micro_batch"] for v in ("plain-full", "plain-lora")] == [4, 4]
    assert [rows[v]["micro_batch"] for v in ("project-full", "project-lora")] == [8, 8]
    # Every step's loss is recorded, and rows of the same model and data learn alike.
    assert all(len(r["losses"]) == 3 for r in rows.values())
    assert rows["project-full"]["losses"][0] == pytest.approx(
        rows["plain-full"]["losses"][0], rel=0.01
    )
    # The packing rows train on the same rows at each step; only the batching differs.
    padded, packed = rows["plain-padded"], rows["project-packed"]
    assert padded["losses"][0] == pytest.approx(packed["losses"][0], rel=0.01)
    assert padded["padding_share"] > 0
    assert packed["padding_share"] >= 0
    assert rows["project-lora"]["speedups"] == "fused_lora"  # the levers a CPU has
    table = capsys.readouterr().out
    assert "| plain-full | - | 4 |" in table
    assert "project-lora / plain-lora:" in table
    assert "project-packed / plain-padded:" in table


def test_bench_lever_rows_leave_out_one_lever_each(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    argv = ["bench", "--preset", "tiny", "--steps", "1", "--warmup", "1", "--levers"]
    argv += ["--no-packing", "--variants", "project-lora,project-lora/no-fused_lora"]
    assert main([*argv, "--json", str(out)]) == 0
    rows = {r["variant"]: r for r in json.loads(out.read_text())}
    assert rows["project-lora"]["speedups"] == "fused_lora"
    assert rows["project-lora/no-fused_lora"]["speedups"] == "none"
    # PEFT's forward under autocast and the fused one compute the same first step.
    first = rows["project-lora"]["losses"][0]
    assert rows["project-lora/no-fused_lora"]["losses"][0] == pytest.approx(first, rel=1e-4)


def test_bench_refuses_an_unknown_row() -> None:
    with pytest.raises(SystemExit, match="unknown"):
        main(["bench", "--preset", "tiny", "--variants", "project-full/no-warp-drive"])
