"""The throughput bench runs every variant end to end (tiny preset, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sovereign_training.cli import main

pytestmark = pytest.mark.training


def test_bench_tiny_preset_measures_all_variants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rows.json"
    assert (
        main(["bench", "--preset", "tiny", "--steps", "2", "--warmup", "1", "--json", str(out)])
        == 0
    )
    rows = json.loads(out.read_text())
    assert [r["variant"] for r in rows] == [
        "plain-full",
        "plain-lora",
        "project-full",
        "project-lora",
    ]
    assert all(r["tokens_per_second"] > 0 for r in rows)
    assert all(r["tflops"] > 0 for r in rows)
    assert [r["micro_batch"] for r in rows] == [4, 4, 8, 8]
    table = capsys.readouterr().out
    assert "| plain-full | 4 |" in table
    assert "project-lora / plain-lora:" in table
