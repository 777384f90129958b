"""Loading a model folder as training saves it: a full model, a merged LoRA model, or an adapter.

Nothing is ever downloaded here (``local_files_only``): the ModelDeployment's init container has
already fetched the model, and serving nodes may have no route to any hub.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from sovereign_training.serve.engine import Engine

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *_DTYPES)
# Config keys that different architectures use for their context length.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class ModelLoadError(Exception):
    """The model folder cannot be served; the message says what is wrong and what is expected."""


@dataclass(frozen=True)
class LoadOptions:
    model_dir: Path
    dtype: str = "float32"
    max_model_len: int | None = None
    base_model_dir: Path | None = None


def load_engine(options: LoadOptions) -> Engine:
    """Load the model and tokenizer in ``options.model_dir`` and wrap them in an Engine."""
    model_dir = options.model_dir
    if not model_dir.is_dir():
        raise ModelLoadError(f"--model-dir {model_dir}: no such directory")
    if (model_dir / "config.json").is_file():
        model = _load_causal_lm(model_dir, options.dtype)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    elif (model_dir / "adapter_config.json").is_file():
        model, tokenizer = _load_adapter(model_dir, options)
    else:
        raise ModelLoadError(
            f"--model-dir {model_dir}: expected config.json (a full or merged model) or "
            "adapter_config.json (a PEFT adapter); found neither"
        )
    model.eval()
    max_len = resolve_max_model_len(model.config, options.max_model_len)
    log.info("loaded %s (max model length %d)", model_dir, max_len)
    return Engine(model, tokenizer, max_len)


def resolve_max_model_len(config: Any, requested: int | None) -> int:
    """The context limit: ``requested`` if given and within the model's, else the model's."""
    native = next(
        (int(v) for k in _CONTEXT_KEYS if isinstance(v := getattr(config, k, None), int)), None
    )
    if requested is not None:
        if requested < 1:
            raise ModelLoadError(f"--max-model-len must be at least 1 (got {requested})")
        if native is not None and requested > native:
            raise ModelLoadError(
                f"--max-model-len {requested} exceeds the model's context length {native}"
            )
        return requested
    if native is None:
        raise ModelLoadError(
            "the model's config gives no context length "
            f"(none of {', '.join(_CONTEXT_KEYS)}); pass --max-model-len"
        )
    return native


def _torch_dtype(name: str) -> torch.dtype | str:
    if name == "auto":
        return "auto"
    if name not in _DTYPES:
        raise ModelLoadError(f"--dtype {name}: expected one of {', '.join(DTYPE_CHOICES)}")
    return _DTYPES[name]


def _load_causal_lm(path: Path | str, dtype: str, revision: str | None = None) -> Any:
    return AutoModelForCausalLM.from_pretrained(
        path, dtype=_torch_dtype(dtype), revision=revision, local_files_only=True
    )


def _load_adapter(model_dir: Path, options: LoadOptions) -> tuple[Any, Any]:
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise ModelLoadError(
            f"--model-dir {model_dir} is a PEFT adapter; serving it needs peft "
            "(pip install 'sovereign-ai-operator[training]'), or serve the merged model"
        ) from exc
    adapter_config = json.loads((model_dir / "adapter_config.json").read_text())
    base: Path | str | None = options.base_model_dir
    # Training records the base as a hub id (with its revision) or as the URI it came from.
    revision = None
    if base is None:
        base = adapter_config.get("base_model_name_or_path")
        revision = adapter_config.get("revision")
        if isinstance(base, str) and base.startswith("file://"):
            base = base.removeprefix("file://")
    if not base:
        raise ModelLoadError(
            f"{model_dir / 'adapter_config.json'} names no base_model_name_or_path; "
            "pass --base-model-dir"
        )
    try:
        AutoConfig.from_pretrained(base, revision=revision, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"the adapter's base model {base} is not available locally; fetch it "
            "(python -m sovereign_training fetch) and pass --base-model-dir"
        ) from exc
    log.info("loading adapter %s onto base %s and merging it", model_dir, base)
    base_model = _load_causal_lm(base, options.dtype, revision)
    model = PeftModel.from_pretrained(base_model, str(model_dir)).merge_and_unload()
    has_tokenizer = any((model_dir / name).is_file() for name in _TOKENIZER_FILES)
    tokenizer = (
        AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        if has_tokenizer
        else AutoTokenizer.from_pretrained(base, revision=revision, local_files_only=True)
    )
    return model, tokenizer
