"""Model and dataset sources, the model digest, `fetch`, progress lines and FLOPs accounting."""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sovereign_training import flops
from sovereign_training.digest import model_digest
from sovereign_training.fetch import RECORD_NAME, fetch_model
from sovereign_training.progress import parse_line, progress_line, result_line
from sovereign_training.sources import SourceError, checked_dataset, model_dir, parse_uri
from sovereign_training.tracking import redact_uri

pytestmark = pytest.mark.training


def test_digest_is_deterministic_and_covers_names_and_contents(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, order in ((a, ["x.json", "sub/y.bin"]), (b, ["sub/y.bin", "x.json"])):
        for name in order:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(name.encode())
    assert model_digest(a) == model_digest(b)
    assert model_digest(a).startswith("sha256:")
    assert len(model_digest(a)) == 71
    (b / RECORD_NAME).write_text("{}")
    assert model_digest(a) == model_digest(b)  # the fetch record is not part of the model
    (b / "registered_model_meta").write_text("model_name: m\n")
    assert model_digest(a) == model_digest(b)  # nor MLflow's note of what it downloaded
    (b / "sub" / "registered_model_meta").write_text("a model file of that name")
    assert model_digest(a) != model_digest(b)  # only at the root is it MLflow's
    (b / "sub" / "registered_model_meta").unlink()
    (b / "x.json").write_bytes(b"changed")
    assert model_digest(a) != model_digest(b)
    (b / "x.json").rename(b / "z.json")
    (b / "z.json").write_bytes(b"x.json")
    assert model_digest(a) != model_digest(b)


def test_uri_parsing_and_pvc_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVAI_PVC_ROOT", "/data/claims")
    assert (
        parse_uri("pvc://models/llama/v1", "baseModel.uri").location
        == "/data/claims/models/llama/v1"
    )
    assert (
        parse_uri("hf://meta-llama/Llama-3.2-1B", "baseModel.uri").location
        == "meta-llama/Llama-3.2-1B"
    )
    assert parse_uri("s3://bucket/a/b", "x").location == "bucket/a/b"
    assert parse_uri("models:/eu/3", "x").scheme == "mlflow"
    assert parse_uri("file:///srv/m", "x").location == "/srv/m"
    with pytest.raises(SourceError, match=r"^baseModel.uri: unsupported URI scheme 'gs'"):
        parse_uri("gs://bucket/model", "baseModel.uri")
    with pytest.raises(SourceError, match="expected hf://org/name"):
        parse_uri("hf://justaname", "baseModel.uri")


def test_redact_uri_drops_credentials_and_signatures() -> None:
    assert redact_uri("https://user:pw@data.example.eu:8443/d.jsonl?X-Amz-Signature=abc") == (
        "https://data.example.eu:8443/d.jsonl"
    )
    assert redact_uri("s3://bucket/key") == "s3://bucket/key"
    assert redact_uri("models:/eu/1") == "models:/eu/1"


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_dataset_over_http_is_downloaded_and_checked(
    http_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chat_rows: list[str]
) -> None:
    monkeypatch.setenv("SOVAI_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "www" / "d.jsonl").write_text("\n".join(chat_rows[:5]) + "\n")
    import hashlib

    expected = hashlib.sha256((tmp_path / "www" / "d.jsonl").read_bytes()).hexdigest()
    path, actual = checked_dataset(f"{http_server}/d.jsonl", "dataset.trainingUri", expected)
    assert actual == expected
    assert path.read_text().count("\n") == 5
    with pytest.raises(SourceError, match=r"dataset\.sha256 mismatch"):
        checked_dataset(f"{http_server}/d.jsonl", "dataset.trainingUri", "f" * 64)
    with pytest.raises(SourceError, match=r"^dataset.trainingUri: download of .* failed"):
        checked_dataset(f"{http_server}/missing.jsonl", "dataset.trainingUri", None)


def test_fetch_from_pvc_skips_when_unchanged(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = tmp_path / "pvc"
    (claims / "models").mkdir(parents=True)
    (claims / "models" / "tiny").symlink_to(tiny_model, target_is_directory=True)
    monkeypatch.setenv("SOVAI_PVC_ROOT", str(claims))
    dest = tmp_path / "dest"
    first = fetch_model("pvc://models/tiny", dest)
    assert not first.skipped
    assert first.digest == model_digest(tiny_model)
    assert json.loads((dest / RECORD_NAME).read_text())["digest"] == first.digest
    assert fetch_model("pvc://models/tiny", dest).skipped
    (dest / "config.json").write_text("{}")  # damaged copy: fetched again
    again = fetch_model("pvc://models/tiny", dest)
    assert not again.skipped
    assert model_digest(dest) == first.digest
    line = parse_line(again.line())
    assert line is None  # SOVAI_FETCH is not an operator progress line
    assert again.line().startswith('SOVAI_FETCH {"uri":"pvc://models/tiny"')


def test_fetch_from_hub_cache_offline(tiny_model: Path, tmp_path: Path) -> None:
    """hf:// with HF_HUB_OFFLINE=1 resolves from a local hub cache (as an air-gapped mirror
    would fill it); nothing is downloaded."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--eu-org--tiny-llama"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in tiny_model.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    dest = tmp_path / "dest"
    cmd = [
        sys.executable,
        "-m",
        "sovereign_training",
        "fetch",
        "--uri",
        "hf://eu-org/tiny-llama",
        "--dest",
        str(dest),
    ]
    out = subprocess.run(
        cmd, env=env, capture_output=True, text=True, check=True, timeout=300
    ).stdout
    record = json.loads(out.strip().splitlines()[-1].removeprefix("SOVAI_FETCH "))
    assert record["digest"] == model_digest(tiny_model)
    assert record["skipped"] is False
    assert json.loads((dest / RECORD_NAME).read_text())["fingerprint"] == f"hf:{commit}"
    out = subprocess.run(
        cmd, env=env, capture_output=True, text=True, check=True, timeout=300
    ).stdout
    assert '"skipped":true' in out
    missing = subprocess.run(
        [*cmd[:5], "hf://eu-org/absent", "--dest", str(tmp_path / "x")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2
    assert "HF_HUB_OFFLINE is set" in missing.stderr


def test_model_dir_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"^baseModel.uri: .* is not a folder"):
        model_dir(str(tmp_path / "absent"))
    with pytest.raises(SourceError, match="http"):
        model_dir("https://example.eu/model")


def test_progress_and_result_lines_are_exact() -> None:
    line = progress_line(
        {
            "step": 3,
            "totalSteps": 10,
            "epoch": 0.3,
            "trainLoss": 1.5,
            "evalLoss": float("nan"),
            "tokensPerSecond": 100.0,
            "estimatedRemainingSeconds": 7,
            "hyperparameters": {"epochs": 2},
        }
    )
    assert line == (
        'SOVAI_PROGRESS {"step":3,"totalSteps":10,"epoch":0.3,"trainLoss":1.5,"evalLoss":null,'
        '"tokensPerSecond":100.0,"estimatedRemainingSeconds":7,"hyperparameters":{"epochs":2}}'
    )
    with pytest.raises(KeyError):
        result_line({"runId": "r"})
    assert parse_line("(worker) " + line) == ("SOVAI_PROGRESS", json.loads(line.split(" ", 1)[1]))


def test_flops_and_mfu_match_the_gpu_anchors() -> None:
    # Llama 3.2 1B: 1,235,814,400 parameters (tied embeddings); the anchors' plain loop ran
    # 36,115 tokens/s at 30.0% MFU on an H100 SXM.
    per_token = flops.flops_per_token(1_235_814_400, 16, 2048, 2048, lora=False)
    mfu = flops.mfu(36_115, per_token, flops.gpu_peak_flops("NVIDIA H100 80GB HBM3"), 1)
    assert mfu == pytest.approx(0.300, abs=0.002)
    assert flops.gpu_peak_flops("NVIDIA H200") == 989e12
    assert flops.gpu_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert flops.gpu_peak_flops("Some CPU") is None
    assert flops.mfu(1.0, 1.0, None, 1) is None
