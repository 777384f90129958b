"""A registered version loads with MLflow's own API: mlflow.pyfunc.load_model("models:/N/V").

The folder is registered the way training registers it (run artifacts "model", then a model
version whose source they are), in a real MLflow store (sqlite), and loaded back by MLflow.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from sovereign_training.serve.loading import ModelLoadError
from sovereign_training.serve.mlflow_pyfunc import MLMODEL, add_pyfunc_flavor, conversations
from sovereign_training.sources import resolved_revision

pytestmark = pytest.mark.training


def register(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", tracking)
    client = MlflowClient(tracking, registry_uri=tracking)
    run = client.create_run(client.create_experiment("pyfunc"))
    client.log_artifacts(run.info.run_id, str(folder), "model")
    client.create_registered_model("eu-dp")
    version = client.create_model_version(
        "eu-dp", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    return f"models:/eu-dp/{version.version}"


def test_an_unmerged_adapter_loads_on_its_base_with_mlflow_pyfunc(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    adapter = tmp_path / "adapter"
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(str(adapter))
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(adapter)
    # As training writes it: the base named by where it came from (here a local folder).
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tiny_model)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    assert add_pyfunc_flavor(adapter, {"sovai.job.name": "eu-dp"})
    assert (adapter / MLMODEL).is_file()

    model = mlflow.pyfunc.load_model(register(adapter, tmp_path, monkeypatch))
    assert model.metadata.metadata == {"sovai.job.name": "eu-dp"}
    replies = model.predict(
        ["What is the GDPR?", [{"role": "user", "content": "Where may data go?"}]],
        params={"max_tokens": 3},
    )
    assert len(replies) == 2
    assert all(isinstance(reply, str) for reply in replies)
    frame = pd.DataFrame({"prompt": ["a", "b", "c"]})
    assert len(model.predict(frame, params={"max_tokens": 2})) == 3


def test_a_missing_base_is_named(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = tmp_path / "adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(str(adapter))
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "not-here")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    add_pyfunc_flavor(adapter, {})
    with pytest.raises(ModelLoadError, match=r"not available locally.*base_model_dir"):
        mlflow.pyfunc.load_model(register(adapter, tmp_path, monkeypatch))


def test_rows_become_conversations() -> None:
    [one] = conversations("hi")
    assert [(m.role, m.text()) for m in one] == [("user", "hi")]
    rows = conversations([[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]])
    assert [m.role for m in rows[0]] == ["system", "user"]
    frame = pd.DataFrame({"messages": [[{"role": "user", "content": "x"}]]})
    assert conversations(frame)[0][0].text() == "x"
    with pytest.raises(ValueError, match="'messages' or 'prompt'"):
        conversations(pd.DataFrame({"text": ["x"]}))


def test_the_revision_recorded_is_the_one_held(tmp_path: Path) -> None:
    snapshot = tmp_path / "models--acme--m" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    assert resolved_revision("hf://acme/m", "main", snapshot) == "0123abcd"
    assert resolved_revision("hf://acme/m", None, snapshot) == "0123abcd"
    assert resolved_revision(str(tmp_path), None, tmp_path) == ""
    assert resolved_revision("pvc://claim/m", "v2", tmp_path) == "v2"
