"""What makes the training path fast, in one place: the training loop and the bench both use it.

Each lever is a field of `Speedups`, measured on its own bench row (docs/benchmarks.md):
- `compile`: torch.compile of each decoder block and of the loss head ("regional" compilation:
  the blocks are identical, so one block's graph serves them all and start-up compiles one block
  instead of the whole model), which fuses the norms, rotary embedding, SwiGLU and the
  cross-entropy into a few kernels;
- `float8`: FP8 matmuls in the decoder's linear layers (float8.py), on GPUs that have them;
- `flex_attention`: packed blocks attend through FlexAttention, whose block mask skips the tiles
  where one document would see another; SDPA computes them all under a dense document mask
  (CUDA only: FlexAttention has no backward on the CPU);
- `fused_lora`: the LoRA forward of lora_linear.py instead of PEFT's, without autocast.

Each stays only while its bench row shows it earns its place: cuDNN attention ahead of
FlashAttention was measured at 1.00x on an H200 (docs/benchmarks.md) and was removed.

The loss is computed by `CausalLMLoss`, the model and its loss as one module (DDP sees one
forward): the decoder's hidden states, then the head's logits and a summed token cross-entropy,
compiled together, for the model families whose head is a plain linear layer.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, cast

import torch
import torch.nn.functional as F

from .data import IGNORE_INDEX

# Model families whose logits are the head's plain linear output (no soft-capping or scaling),
# so that the compiled loss head computes exactly what transformers would.
PLAIN_HEAD_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
# FlexAttention pays for building its block mask and loses to SDPA's causal kernel when a block
# holds one document (83.5k against 79.1k tokens/s on an H200); from two documents a block on,
# the tiles it skips win (71.4k against 87.1k useful tokens/s on chat rows of about 134 tokens).
FLEX_MIN_DOCUMENTS_PER_BLOCK = 2.0
# Dynamo compiles a block once per distinct guard set; this leaves room for the train and eval
# graphs of every block without falling back to eager code.
RECOMPILE_LIMIT = 64


@dataclass(frozen=True)
class Speedups:
    """Which levers the training path uses (module doc)."""

    compile: bool = False
    float8: bool = False
    flex_attention: bool = False
    fused_lora: bool = False

    @classmethod
    def for_device(cls, device: torch.device, *, use_compile: bool | None = None) -> Speedups:
        """Every lever that helps on `device`: all of them on an FP8-capable GPU; on other GPUs
        all but FP8; on the CPU only the fused LoRA forward (compile when asked)."""
        cuda = device.type == "cuda"
        return cls(
            compile=cuda if use_compile is None else use_compile,
            float8=_float8_supported(device),
            flex_attention=cuda,
            fused_lora=True,
        )

    def without(self, name: str) -> Speedups:
        """The same levers but one (bench rows that show what each lever gives)."""
        if name not in self.names():
            raise ValueError(f"unknown speedup {name!r}; known: {', '.join(self.names())}")
        return replace(self, **{name: False})

    @staticmethod
    def names() -> list[str]:
        return [f.name for f in fields(Speedups)]

    def describe(self) -> str:
        on = [f.name for f in fields(self) if getattr(self, f.name)]
        return ",".join(on) or "none"


def attention_implementation(speedups: Speedups, documents_per_block: float) -> str:
    """The transformers attention the model is loaded with, for blocks that hold this many
    documents on average."""
    if speedups.flex_attention and documents_per_block >= FLEX_MIN_DOCUMENTS_PER_BLOCK:
        return "flex_attention"
    return "sdpa"


def _float8_supported(device: torch.device) -> bool:
    from .float8 import float8_supported

    return float8_supported(device)


def unwrap_peft(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def prepare_model(model: Any, speedups: Speedups) -> Any:
    """Levers applied to the base model before LoRA wraps it: FP8 linear layers."""
    if speedups.float8:
        from .float8 import convert_to_float8

        convert_to_float8(model)
    return model


def prepare_lora(model: Any, speedups: Speedups) -> Any:
    """Levers applied to the PEFT model: the fused LoRA forward."""
    if speedups.fused_lora:
        from .lora_linear import use_fused_lora

        use_fused_lora(model)
    return model


def has_plain_head(model: Any) -> bool:
    base = unwrap_peft(model)
    config = getattr(base, "config", None)
    return (
        getattr(config, "model_type", None) in PLAIN_HEAD_MODEL_TYPES
        and getattr(base, "get_output_embeddings", lambda: None)() is not None
        and callable(getattr(base, "get_decoder", None))
    )


def compile_blocks(model: Any) -> int:
    """torch.compile each decoder block in place; returns how many blocks there are."""
    decoder = unwrap_peft(model).get_decoder()
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        raise ValueError(f"{type(decoder).__name__} has no `layers` list of blocks to compile")
    import torch._dynamo.config as dynamo_config

    # The name changed across torch releases (cache_size_limit before recompile_limit).
    for key in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, key):
            setattr(dynamo_config, key, max(getattr(dynamo_config, key), RECOMPILE_LIMIT))
    for layer in layers:
        layer.compile()
    return len(layers)


def token_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    divisor: torch.Tensor,
) -> torch.Tensor:
    """Summed next-token cross-entropy over labelled positions, divided by `divisor`: what
    transformers' causal-LM loss computes with num_items_in_batch, in fp32 over bf16 logits."""
    logits = F.linear(hidden, weight, bias)
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    loss = F.cross_entropy(
        logits.float().flatten(0, 1),
        targets.flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss / divisor


class CausalLMLoss(torch.nn.Module):
    """The causal LM (PEFT-wrapped or not) and its token loss as one module: forward returns
    the loss. With `compile_head`, the head's matmul and the cross-entropy are compiled
    together (the fp32 logits are never written out)."""

    def __init__(self, model: Any, *, compile_head: bool) -> None:
        super().__init__()
        self.model = model
        self.plain_head = has_plain_head(model)
        self._loss: Any = torch.compile(token_loss) if compile_head else token_loss

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | None = None,
    ) -> torch.Tensor:
        divisor = (
            num_items_in_batch
            if num_items_in_batch is not None
            else (labels[:, 1:] != IGNORE_INDEX).sum()
        )
        if not self.plain_head:
            out = self.model(
                input_ids=input_ids,
                labels=labels,
                position_ids=position_ids,
                attention_mask=attention_mask,
                num_items_in_batch=divisor,
            )
            return cast(torch.Tensor, out.loss)
        base = unwrap_peft(self.model)
        hidden = base.get_decoder()(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=attention_mask,
            use_cache=False,
        ).last_hidden_state
        head = base.get_output_embeddings()
        return cast(torch.Tensor, self._loss(hidden, head.weight, head.bias, labels, divisor))
