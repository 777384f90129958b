"""The operator <-> trainer contract end to end: the job.json the operator's builder writes is
what the trainer parses, and the trainer starts only on the job.json its entrypoint names."""

from __future__ import annotations

import json
import shlex
import threading
import time
from pathlib import Path

import pytest

from sovereign_operator.api.v1alpha1.finetunejob import FineTuneJobSpec, ResolvedHyperparameters
from sovereign_operator.api.v1alpha1.hyperparameters import resolve_hyperparameters
from sovereign_operator.api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from sovereign_operator.builders.context import BuildConfig, Owner, Residency
from sovereign_operator.builders.jobconfig import CONFIG_ANNOTATION, config_digest, job_config_text
from sovereign_operator.builders.rayjob import build_rayjob
from sovereign_training.cli import build_parser
from sovereign_training.config import ConfigError, load_config, parse_config

pytestmark = pytest.mark.training

OWNER = Owner(name="ft", namespace="team-a", uid="0000-1111")
RESIDENCY = Residency("eu-only", "topology.kubernetes.io/region", ("eu-west-par",))
CFG = BuildConfig(runtime_image="registry.eu/sovai/runtime:1", mlflow_tracking_uri=None)


def job_json(
    epochs: int, policy: SovereigntyPolicySpec | None = None, chain_head: str | None = None
) -> str:
    spec = FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": "hf://acme/tiny-llama"},
            "dataset": {"trainingUri": "s3://eu-data/train.jsonl"},
            "method": {
                "type": "lora",
                "hyperparameters": {"epochs": epochs, "batchSize": 8, "microBatchSize": 4},
            },
        }
    )
    hyperparameters = ResolvedHyperparameters(
        epochs=epochs,
        batch_size=8,
        micro_batch_size=4,
        learning_rate=2e-4,
        max_seq_length=2048,
        warmup_ratio=0.03,
        seed=42,
    )
    return job_config_text(
        spec, OWNER, hyperparameters, RESIDENCY, policy=policy, chain_head=chain_head
    )


def test_the_trainer_parses_what_the_operator_writes_and_its_entrypoint(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text(job_json(3))
    spec = FineTuneJobSpec.model_validate(
        {"baseModel": {"uri": "hf://acme/tiny"}, "dataset": {"trainingUri": "s3://eu-data/t.jsonl"}}
    )
    rayjob = build_rayjob(spec, OWNER, CFG, RESIDENCY, job_config=path.read_text())
    entrypoint = rayjob["spec"]["entrypoint"]
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    # What the head pod shows the trainer as its job.json is what the operator wrote.
    assert head["metadata"]["annotations"][CONFIG_ANNOTATION] == path.read_text()
    argv = shlex.split(entrypoint)
    assert argv[:3] == ["python", "-m", "sovereign_training"]
    args = build_parser().parse_args([*argv[3:]])
    assert args.config_sha256 == config_digest(path.read_text())
    cfg = load_config(path, args.config_sha256, 1)
    assert cfg.method.hyperparameters.epochs == 3
    assert cfg.method.type == "lora"


def test_the_trainer_reads_the_policy_facts_and_the_chain_head(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    policy = SovereigntyPolicySpec.model_validate(
        {
            "allowedRegions": ["eu-west-par"],
            "baseModels": [{"uri": "hf://acme/tiny-llama", "trainingFlops": 3.8e25}],
            "energy": {"pue": 1.3},
        }
    )
    head = "sha256:" + "cd" * 32
    path.write_text(job_json(3, policy, head))
    cfg = load_config(path)
    assert cfg.base_model.training_flops == 3.8e25
    assert cfg.energy.pue == 1.3
    assert cfg.audit.chain_head == head
    # Without them, the trainer's defaults: nothing known.
    path.write_text(job_json(3))
    cfg = load_config(path)
    assert (cfg.base_model.training_flops, cfg.energy.pue, cfg.audit.chain_head) == (None,) * 3


def test_the_trainer_waits_for_the_job_json_it_was_started_for(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text(job_json(3))  # the kubelet has not synced the new file yet
    new = job_json(5)
    digest = config_digest(new)
    writer = threading.Timer(0.5, path.write_text, args=(new,))
    writer.start()
    started = time.monotonic()
    cfg = load_config(path, digest, wait_seconds=30)
    writer.join()
    assert 0.4 < time.monotonic() - started < 10
    assert cfg.method.hyperparameters.epochs == 5


def test_a_job_json_that_never_comes_fails_naming_both_digests(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text(job_json(3))
    wanted = config_digest(job_json(5))
    with pytest.raises(ConfigError, match=f"started for {wanted}") as err:
        load_config(path, wanted, wait_seconds=0.2)
    assert "did not reach this pod within 0 s" in str(err.value)


@pytest.mark.parametrize("examples", [37, 800, 5000, 100_000])
@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("workers", [1, 3])
def test_the_trainer_chooses_what_the_operator_left_auto_by_the_same_rules(
    examples: int, method: str, workers: int
) -> None:
    """A spec that leaves the size-dependent hyperparameters "auto": job.json carries "auto",
    the trainer parses it and chooses, for its dataset's size, what the operator's rules say
    for that size; the operator's own values (no size) are only estimates it does not claim."""
    spec = FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": "hf://acme/tiny-llama"},
            "dataset": {"trainingUri": "s3://eu-data/train.jsonl"},
            "method": {"type": method},
            "resources": {"workers": workers, "gpusPerWorker": 1},
        }
    )
    estimate = resolve_hyperparameters(spec)
    document = json.loads(job_config_text(spec, OWNER, estimate, RESIDENCY))
    hp = document["method"]["hyperparameters"]
    assert (hp["epochs"], hp["batchSize"], hp["microBatchSize"]) == ("auto", "auto", "auto")
    cfg = parse_config(document)
    with pytest.raises(ConfigError, match="still 'auto'"):
        cfg.chosen()
    chosen = cfg.resolved(examples).chosen()
    expected = resolve_hyperparameters(spec, dataset_size_hint=examples)
    assert chosen.model_dump(by_alias=True) == expected.to_json_dict()
    assert chosen.batch_size % (chosen.micro_batch_size * workers) == 0


def test_explicit_hyperparameters_reach_the_trainer_unchanged() -> None:
    spec = FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": "hf://acme/tiny-llama"},
            "dataset": {"trainingUri": "s3://eu-data/train.jsonl"},
            "method": {
                "type": "lora",
                "hyperparameters": {"epochs": 2, "batchSize": 12, "microBatchSize": 3},
            },
            "resources": {"workers": 2, "gpusPerWorker": 1},
        }
    )
    text = job_config_text(spec, OWNER, resolve_hyperparameters(spec), RESIDENCY)
    cfg = parse_config(json.loads(text))
    chosen = cfg.resolved(10).chosen()
    assert (chosen.epochs, chosen.batch_size, chosen.micro_batch_size) == (2, 12, 3)
