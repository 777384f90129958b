"""MLflow's own API on a registered version: ``mlflow.pyfunc.load_model("models:/NAME/VERSION")``.

Training writes an ``MLmodel`` file (the pyfunc flavor, with this module as its loader) into the
folder it registers, beside the model's own files, so that an MLflow user loads a version the
way they load any other. The folder stays what serving fetches and ``from_pretrained`` reads; the
``MLmodel`` file is part of it before its digest is taken, so the digest covers it.

The loaded model answers chat conversations with the same prompt rendering and decoding as the
serving runtime. A LoRA adapter is loaded onto its base (named in ``adapter_config.json``); where
that base is not available locally, ``model_config={"base_model_dir": PATH}`` names its folder.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sovereign_training.serve.engine import Engine, Finished, SamplingParams
from sovereign_training.serve.loading import LoadOptions, ModelLoadError, load_engine
from sovereign_training.serve.prompts import chat_prompt_ids
from sovereign_training.serve.protocol import ChatMessage

LOADER_MODULE = __name__
MLMODEL = "MLmodel"
DEFAULT_MAX_TOKENS = 64
# predict()'s parameters: name, MLflow type, default.
PARAMS = (
    ("max_tokens", "long", DEFAULT_MAX_TOKENS),
    ("temperature", "double", 0.0),
    ("top_p", "double", 1.0),
)


def add_pyfunc_flavor(folder: Path, metadata: Mapping[str, str]) -> bool:
    """Write ``folder/MLmodel``: the pyfunc flavor with this module as loader, the whole
    folder as its data, and ``metadata`` (lineage, no secrets) for MLflow's UI and API.
    Returns False, writing nothing, where mlflow is not installed (nothing is registered
    there either: a benchmark's training run)."""
    if importlib.util.find_spec("mlflow") is None:
        return False
    import mlflow.pyfunc
    from mlflow.models import Model, ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    # Only the parameters have a schema: without one MLflow drops them at predict time. The
    # input is free-form (prompts or conversations, see `conversations`).
    params = ParamSchema([ParamSpec(name, kind, default) for name, kind, default in PARAMS])
    model = Model(metadata=dict(metadata), signature=ModelSignature(params=params))
    mlflow.pyfunc.add_to_model(model, loader_module=LOADER_MODULE, data=".")
    model.save(str(folder / MLMODEL))
    return True


class ChatModel:
    """What ``mlflow.pyfunc.load_model`` returns (wrapped by MLflow): ``predict`` takes one
    conversation or prompt per row and returns the assistant's reply to each."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def predict(self, model_input: Any, params: Mapping[str, Any] | None = None) -> list[str]:
        given = {name: default for name, _, default in PARAMS} | dict(params or {})
        sampling = SamplingParams(
            max_tokens=int(given["max_tokens"]),
            temperature=float(given["temperature"]),
            top_p=float(given["top_p"]),
            stop=(),
            seed=None,
        )
        return [self._reply(messages, sampling) for messages in conversations(model_input)]

    def _reply(self, messages: list[ChatMessage], sampling: SamplingParams) -> str:
        ids = chat_prompt_ids(self.engine.tokenizer, messages, None)
        text = ""
        for event in self.engine.generate(ids, sampling, threading.Event()):
            text += event.text if isinstance(event, Finished) else event
        return text


def conversations(model_input: Any) -> list[list[ChatMessage]]:
    """One conversation per row, from what MLflow users pass: a prompt, a list of prompts, a
    conversation (a list of ``{"role", "content"}``), a list of them, or a pandas DataFrame
    with a ``messages`` or ``prompt`` column."""
    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):  # a DataFrame
        column = "messages" if "messages" in model_input.columns else "prompt"
        if column not in model_input.columns:
            raise ValueError("expected a 'messages' or 'prompt' column")
        return [_conversation(row) for row in model_input[column].tolist()]
    if isinstance(model_input, str) or _is_conversation(model_input):
        return [_conversation(model_input)]
    if isinstance(model_input, Sequence):
        return [_conversation(row) for row in model_input]
    raise ValueError(f"cannot read {type(model_input).__name__} as conversations")


def _is_conversation(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and bool(value)
        and all(isinstance(m, Mapping) and "role" in m for m in value)
    )


def _conversation(row: Any) -> list[ChatMessage]:
    if isinstance(row, str):
        return [ChatMessage(role="user", content=row)]
    if isinstance(row, Mapping) and "messages" in row:
        row = row["messages"]
    if hasattr(row, "tolist"):  # a numpy array, as pandas gives a column of lists
        row = row.tolist()
    return [ChatMessage.model_validate(dict(m)) for m in row]


def _load_pyfunc(data_path: str, model_config: Mapping[str, Any] | None = None) -> ChatModel:
    """MLflow's entry point for the pyfunc flavor (``loader_module``)."""
    base = (model_config or {}).get("base_model_dir")
    options = LoadOptions(model_dir=Path(data_path), base_model_dir=Path(base) if base else None)
    try:
        return ChatModel(load_engine(options))
    except ModelLoadError as error:  # its hints name serving's flags; say MLflow's way too
        raise ModelLoadError(
            f"{error} (with MLflow: mlflow.pyfunc.load_model(uri, "
            'model_config={"base_model_dir": PATH}))'
        ) from error
