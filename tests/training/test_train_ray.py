"""Fine-tuning for real: Ray Train on the CPU with two workers, MLflow on sqlite, the tiny model.

One full fine-tune (module fixture) feeds several checks: the loss goes down, the MLflow run and
registered version carry every lineage tag, the model card is there, and the same job run in one
process without Ray gives the same per-step losses (the global batch does not depend on the
number of workers). A LoRA job loses a worker mid-run and must resume from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from sovereign_training import cli
from sovereign_training.config import parse_config
from sovereign_training.digest import file_sha256, model_digest
from sovereign_training.progress import parse_line
from sovereign_training.runner import run_job
from sovereign_training.sources import SourceError
from sovereign_training.tracking import RESULT_ARTIFACT, RESULT_TAG

from .conftest import NODE_NAME, NODE_REGION, job_dict

pytestmark = pytest.mark.training

LINEAGE_TAGS = {
    "sovai.base_model.uri",
    "sovai.base_model.revision",
    "sovai.dataset.training_uri",
    "sovai.dataset.training_sha256",
    "sovai.dataset.validation_uri",
    "sovai.dataset.validation_sha256",
    "sovai.dataset.format",
    "sovai.job.namespace",
    "sovai.job.name",
    "sovai.job.uid",
    "sovai.nodes",
    "sovai.regions",
    "sovai.placement.regions",
    "sovai.tokens_trained",
    "sovai.gpu_hours",
    "sovai.method",
    "sovai.merged",
    "sovai.artifact_kind",
    "sovai.hyperparameters",
    "sovai.model_digest",
    "sovai.compute.wall_seconds",
    "sovai.compute.cpu_core_hours",
    "sovai.compute.training_flops",
    "sovai.compute.flops_method",
    "sovai.compute.energy_method",
}


def _generate(model: Any, tokenizer: Any) -> str:
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the GDPR?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    return str(tokenizer.decode(out[0, ids.shape[1] :]))


def _losses(client: MlflowClient, run_id: str) -> dict[int, list[float]]:
    by_step: dict[int, list[float]] = {}
    for m in client.get_metric_history(run_id, "train_loss"):
        by_step.setdefault(m.step, []).append(m.value)
    return by_step


@pytest.fixture(scope="module")
def full_run(
    tmp_path_factory: pytest.TempPathFactory,
    ray_session: None,
    tiny_model: Path,
    small_datasets: dict[str, Path],
) -> Iterator[dict[str, Any]]:
    """A two-worker full fine-tune with validation data, through Ray Train."""
    tmp = tmp_path_factory.mktemp("full-run")
    job = job_dict(tiny_model, small_datasets["train"])
    job["dataset"]["validationUri"] = str(small_datasets["val"])
    job["dataset"]["sha256"] = file_sha256(small_datasets["train"])
    job["output"] = {"uri": str(tmp / "output" / "model")}
    with pytest.MonkeyPatch.context() as mp:
        tracking = f"sqlite:///{tmp / 'mlflow.db'}"
        mp.setenv("MLFLOW_TRACKING_URI", tracking)
        mp.setenv("SOVAI_CHECKPOINT_URI", str(tmp / "checkpoints"))
        result = run_job(parse_config(job), use_ray=True, work_dir=str(tmp / "work"))
        yield {"result": result, "tracking": tracking, "job": job, "tmp": tmp}


def test_two_workers_loss_goes_down(full_run: dict[str, Any]) -> None:
    result = full_run["result"]
    client = MlflowClient(full_run["tracking"])
    losses = _losses(client, result["runId"])
    steps = sorted(losses)
    assert steps == list(range(1, result["steps"] + 1))
    first = losses[steps[0]][0]
    last3 = sum(losses[s][0] for s in steps[-3:]) / 3
    assert last3 < first - 0.3, (first, last3)
    run = client.get_run(result["runId"])
    assert run.info.status == "FINISHED"
    assert run.data.params["worldSize"] == "2"
    assert run.data.params["accumulationSteps"] == "2"
    assert run.data.tags["sovai.system.world_size"] == "2"
    assert "eval_loss" in run.data.metrics


def test_registered_version_has_lineage_and_model_card(
    full_run: dict[str, Any], small_datasets: dict[str, Path], tmp_path: Path
) -> None:
    result, job = full_run["result"], full_run["job"]
    client = MlflowClient(full_run["tracking"], registry_uri=full_run["tracking"])
    assert result["modelUri"] == f"models:/eu-dp-chat/{result['modelVersion']}"
    version = client.get_model_version("eu-dp-chat", result["modelVersion"])
    assert version.run_id == result["runId"]
    tags = version.tags
    assert set(tags) >= LINEAGE_TAGS
    assert tags["sovai.job.uid"] == job["job"]["uid"]
    assert tags["sovai.job.namespace"] == "team-a"
    assert tags["sovai.job.name"] == "eu-dp-chat"
    assert tags["sovai.dataset.training_sha256"] == file_sha256(small_datasets["train"])
    assert tags["sovai.dataset.validation_sha256"] == file_sha256(small_datasets["val"])
    assert tags["sovai.dataset.training_uri"] == str(small_datasets["train"])
    assert tags["sovai.base_model.uri"] == job["baseModel"]["uri"]
    assert json.loads(tags["sovai.nodes"]) == [{"node": NODE_NAME, "region": NODE_REGION}]
    assert tags["sovai.regions"] == NODE_REGION
    assert tags["sovai.placement.regions"] == "eu-central-1,eu-west-1"
    assert tags["sovai.method"] == "full"
    assert int(tags["sovai.tokens_trained"]) == result["tokensTrained"] > 0
    assert float(tags["sovai.gpu_hours"]) == 0.0  # CPU workers
    compute = result["compute"]
    # Wall time covers more than the steps: data and model loading, evaluation, checkpoints.
    assert compute["wallSeconds"] > result["trainSeconds"] > 0
    assert float(tags["sovai.compute.wall_seconds"]) == compute["wallSeconds"]
    # Ray gives each 1-CPU worker one compute thread.
    assert compute["cpuCoreHours"] == pytest.approx(compute["wallSeconds"] * 2 / 3600, abs=1e-6)
    assert compute["tokens"] == result["tokensTrained"]
    assert compute["trainingFlops"] == compute["flopsPerToken"] * result["tokensTrained"] > 0
    assert compute["energyKwh"] is None
    assert "sovai.compute.energy_kwh" not in tags
    assert compute["baseComputeRatio"] is None  # the tiny model declares no training compute
    assert result["nodes"] == [{"node": NODE_NAME, "region": NODE_REGION}]
    assert result["inputs"] == {
        "datasets": {
            "training": file_sha256(small_datasets["train"]),
            "validation": file_sha256(small_datasets["val"]),
        },
        "baseModel": {"uri": job["baseModel"]["uri"], "revision": ""},
    }

    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=result["modelUri"],
            dst_path=str(tmp_path / "dl"),
            tracking_uri=full_run["tracking"],
        )
    )
    card = (local / "README.md").read_text(encoding="utf-8")
    assert "team-a/eu-dp-chat" in card
    assert file_sha256(small_datasets["train"]) in card
    assert f"{NODE_NAME} ({NODE_REGION})" in card
    assert "## Compute and energy" in card
    assert f"- Wall time: {compute['wallSeconds']} s" in card
    assert "- Energy: not estimated for CPU workers" in card
    assert model_digest(local) == tags["sovai.model_digest"]
    # output.uri holds the same model as the registry.
    assert model_digest(Path(job["output"]["uri"])) == tags["sovai.model_digest"]
    model = AutoModelForCausalLM.from_pretrained(local)
    _generate(model, AutoTokenizer.from_pretrained(local))
    # The card and the tags say the same of the base's revision (a local folder has none).
    assert tags["sovai.base_model.revision"] == ""
    assert "(no revision: a folder)" in card
    # MLflow users load the version with MLflow's own API; the MLmodel carries the lineage.
    loaded = mlflow.pyfunc.load_model(result["modelUri"])
    assert loaded.metadata.metadata["sovai.job.uid"] == job["job"]["uid"]
    [reply] = loaded.predict(["What is the GDPR?"], params={"max_tokens": 4})
    assert isinstance(reply, str)


def test_single_process_matches_ray_and_prints_progress(
    full_run: dict[str, Any],
    write_job: Callable[[dict[str, Any]], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--no-ray: one worker with twice the accumulation sees the same global batches, so the
    per-step losses equal the two-worker run's; and stdout carries the operator's lines."""
    job = json.loads(json.dumps(full_run["job"]))
    job["job"]["uid"] = "single-process-uid"
    job["output"] = {"uri": None}
    job["tracking"]["experimentName"] = "eu-dp-single"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("SOVAI_CHECKPOINT_URI", str(tmp_path / "ckpt"))
    capsys.readouterr()
    code = cli.main(
        ["train", "--config", str(write_job(job)), "--no-ray", "--work-dir", str(tmp_path / "w")]
    )
    assert code == 0
    lines = [
        parsed for line in capsys.readouterr().out.splitlines() if (parsed := parse_line(line))
    ]
    progress = [body for kind, body in lines if kind == "SOVAI_PROGRESS"]
    total = full_run["result"]["steps"]
    assert [p["step"] for p in progress] == list(range(1, total + 1))
    assert all(p["totalSteps"] == total for p in progress)
    assert progress[-1]["epoch"] == 1.0
    assert progress[-1]["estimatedRemainingSeconds"] == 0
    assert progress[-1]["evalLoss"] is not None
    assert lines[-1][0] == "SOVAI_RESULT"
    result = lines[-1][1]
    assert set(result) == {
        "runId",
        "experimentId",
        "modelName",
        "modelVersion",
        "modelUri",
        "modelDigest",
        "outputUri",
        "tokensTrained",
        "gpuHours",
        "nodes",
        "compute",
        "inputs",
        "hyperparameters",
    }
    # The job's run keeps the same document, where the operator reads it when the log is gone.
    client = MlflowClient(tracking)
    assert client.get_run(result["runId"]).data.tags[RESULT_TAG] == RESULT_ARTIFACT
    kept = client.download_artifacts(result["runId"], RESULT_ARTIFACT, str(tmp_path / "kept"))
    assert json.loads(Path(kept).read_text(encoding="utf-8")) == result
    # What it trained with, in every line: here the job's explicit values.
    explicit = job["method"]["hyperparameters"]
    assert result["hyperparameters"] == explicit
    assert all(p["hyperparameters"] == explicit for p in progress)
    # The operator records the digest the trainer computed; the serving fetch is held to it.
    assert result["modelDigest"].startswith("sha256:")
    assert result["tokensTrained"] == full_run["result"]["tokensTrained"]
    ray_losses = _losses(MlflowClient(full_run["tracking"]), full_run["result"]["runId"])
    local_losses = _losses(MlflowClient(tracking), result["runId"])
    for step, values in ray_losses.items():
        assert local_losses[step][0] == pytest.approx(values[0], rel=2e-4, abs=2e-4), step
    for p in progress:
        assert p["trainLoss"] == pytest.approx(local_losses[p["step"]][0], abs=1e-5)


def test_killed_worker_resumes_lora_from_checkpoint(
    ray_session: None,
    tiny_model: Path,
    small_datasets: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rank 1 exits after step 3 on the first attempt; the new worker group resumes at step 2
    (the last checkpoint) and redoes step 3 with the same data and state."""
    job = job_dict(tiny_model, small_datasets["train"])
    job["method"] = {
        "type": "lora",
        "hyperparameters": {**job["method"]["hyperparameters"], "learningRate": 0.01},
        "lora": {
            "rank": 8,
            "alpha": 16,
            "dropout": 0.05,
            "targetModules": ["q_proj", "v_proj", "up_proj"],
        },
        "mergeAdapter": True,
    }
    job["checkpointing"] = {"everySteps": 2, "keep": 2, "maxFailures": 1}
    job["tracking"] = {"experimentName": "eu-dp-lora", "registeredModelName": "eu-dp-lora"}
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("SOVAI_CHECKPOINT_URI", str(tmp_path / "ckpt"))
    monkeypatch.setenv("SOVAI_TEST_CRASH_AT_STEP", "3")
    monkeypatch.setenv("SOVAI_TEST_CRASH_RANK", "1")
    marker = tmp_path / "crashed"
    monkeypatch.setenv("SOVAI_TEST_CRASH_MARKER", str(marker))

    cfg = parse_config(job)
    started = time.time()
    result = run_job(cfg, use_ray=True, work_dir=str(tmp_path / "work"))
    elapsed = time.time() - started

    assert marker.exists(), "the worker was never killed"
    assert result["resumedFromStep"] == 2
    # The wall time counts the lost worker group's time once: from the driver's start, not
    # from the checkpoint resumed from, and not twice.
    wall = result["compute"]["wallSeconds"]
    assert marker.stat().st_mtime - started - 0.5 <= wall <= elapsed
    client = MlflowClient(tracking, registry_uri=tracking)
    run = client.get_run(result["runId"])
    assert run.data.tags["sovai.resumed_from_step"] == "2"
    losses = _losses(client, result["runId"])
    assert sorted(losses) == list(range(1, result["steps"] + 1))
    # Step 3 ran twice, before the crash and after the resume, on the same data and state.
    assert len(losses[3]) == 2
    assert losses[3][1] == pytest.approx(losses[3][0], rel=1e-5)
    assert all(len(losses[s]) == 1 for s in losses if s != 3)

    # The adapter and the merged model both load and generate, and agree with each other.
    work = Path(result["localModelDir"]).parent
    adapter, merged = work / "adapter", work / "model"
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    with_adapter = PeftModel.from_pretrained(base, adapter).eval()
    # transformers' PreTrainedModel.eval carries no annotations.
    merged_model = AutoModelForCausalLM.from_pretrained(merged).eval()  # type: ignore[no-untyped-call]
    tokenizer = AutoTokenizer.from_pretrained(merged)
    ids = torch.tensor([tokenizer("Article 5 GDPR sets principles")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(
            with_adapter(ids).logits, merged_model(ids).logits, atol=1e-4, rtol=1e-4
        )
        plain = AutoModelForCausalLM.from_pretrained(tiny_model)(ids).logits
    assert not torch.allclose(plain, merged_model(ids).logits, atol=1e-4)
    assert _generate(with_adapter, tokenizer) == _generate(merged_model, tokenizer)
    version = client.get_model_version("eu-dp-lora", result["modelVersion"])
    assert version.tags["sovai.method"] == "lora"
    assert version.tags["sovai.merged"] == "true"
    assert {"model", "adapter"} <= {a.path for a in client.list_artifacts(result["runId"])}


def test_dataset_sha256_mismatch_fails_clearly(
    tiny_model: Path,
    small_datasets: dict[str, Path],
    write_job: Callable[[dict[str, Any]], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    job = job_dict(tiny_model, small_datasets["train"])
    wrong = "0" * 64
    job["dataset"]["sha256"] = wrong
    actual = file_sha256(small_datasets["train"])
    with pytest.raises(SourceError) as err:
        run_job(parse_config(job), use_ray=False)
    message = str(err.value)
    assert "dataset.sha256" in message
    assert f"expected {wrong}" in message
    assert f"actual {actual}" in message
    capsys.readouterr()
    assert cli.main(["train", "--config", str(write_job(job)), "--no-ray"]) == 2
    assert "dataset.sha256 mismatch" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists(), "no run may start on unverified data"
