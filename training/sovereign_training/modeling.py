"""Loading the base model and tokenizer, LoRA, precision, optimizer and schedule."""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any, cast

import torch

from .data import ensure_chat_template

if TYPE_CHECKING:
    from pathlib import Path

    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .config import LoraSettings


def param_dtype(device: torch.device) -> torch.dtype:
    """bf16 weights on GPUs that support it (half the memory and bandwidth of fp32, and the
    tensor cores' native type); fp32 on CPU, where bf16 matmuls are slow on most hosts and the
    tiny test models gain nothing."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def adapter_precision(
    device: torch.device, dtype: torch.dtype, *, lora: bool
) -> contextlib.AbstractContextManager[Any]:
    """The context a LoRA forward pass runs in: bf16 autocast when the base weights are bf16.

    PEFT keeps the adapters in fp32 (so the optimizer's small updates are not lost to bf16
    rounding) and, without autocast, casts every adapted layer's input to fp32 and runs the
    adapter matmuls in fp32. Under autocast they run in bf16 on the tensor cores while the
    adapter weights stay fp32: 63,005 against 50,708 tokens/s on an H100 for the Llama-3.2-1B
    shape (docs/benchmarks.md). Full fine-tuning already runs in bf16 and gets no context.
    """
    if lora and dtype == torch.bfloat16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_tokenizer(path: Path) -> tuple[PreTrainedTokenizerBase, bool]:
    """The tokenizer saved with the model; True when the fallback chat template was set."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    used_fallback = ensure_chat_template(tokenizer)
    return tokenizer, used_fallback


def load_model(
    path: Path,
    dtype: torch.dtype,
    device: torch.device,
    *,
    gradient_checkpointing: bool,
    attention: str = "sdpa",
) -> PreTrainedModel:
    """The causal LM in `dtype` on `device`, with `attention` ("sdpa": FlashAttention kernels
    on GPUs; "flex_attention" for packed blocks, speedups.attention_implementation) and the KV
    cache off for training."""
    from transformers import AutoModelForCausalLM

    # transformers' own annotations are partial (untyped methods, a decorated `to`).
    model: Any = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation=attention
    )
    model.config.use_cache = False
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    loaded: PreTrainedModel = model.to(device)
    return loaded


def add_lora(
    model: PreTrainedModel, settings: LoraSettings, *, gradient_checkpointing: bool
) -> Any:
    """Wrap `model` with PEFT LoRA adapters; only the adapters train."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )
    if gradient_checkpointing:
        # Checkpointed blocks need an input that requires grad, or no gradient reaches LoRA.
        cast(Any, model).enable_input_require_grads()
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise ValueError(f"method.lora.targetModules: {exc}") from exc


def make_optimizer(params: list[torch.nn.Parameter], lr: float, device: torch.device) -> Any:
    """AdamW; the fused CUDA kernel on GPUs (one launch for all parameters)."""
    fused = device.type == "cuda"
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0, fused=fused)


def lr_lambda(total_steps: int, warmup_steps: int) -> Any:
    """Linear warm-up to the peak, then cosine decay to 10% of it."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def unwrap(model: Any) -> Any:
    """The module under DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model
