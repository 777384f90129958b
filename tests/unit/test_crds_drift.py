"""crds/ is exactly what the generator makes from the models today."""

from __future__ import annotations

from pathlib import Path

from sovereign_operator.crdgen.__main__ import main
from sovereign_operator.crdgen.render import render_all

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_committed_crds_match_the_models() -> None:
    generated = render_all()
    on_disk = {p.name: p.read_text() for p in CRDS.glob("*.yaml")}
    assert sorted(on_disk) == sorted(generated), "run `make crds`"
    for name, content in generated.items():
        assert on_disk[name] == content, f"crds/{name} is out of date: run `make crds`"


def test_check_mode_reports_drift(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--out", str(tmp_path), "--check"]) == 0
    victim = tmp_path / "sovereign-ai.eu_finetunejobs.yaml"
    victim.write_text(victim.read_text().replace("Lifecycle phase.", "Edited by hand."))
    assert main(["--out", str(tmp_path), "--check"]) == 1
