"""FP8 matmuls for training: the linear layers of the decoder on the tensor cores' FP8 path.

Hopper (and later) GPUs multiply FP8 at twice their bf16 rate. Each linear layer here quantizes
its input and weight to e4m3 and its output gradient to e5m2 (more range, as gradients need), one
scale per tensor from its absolute maximum, recomputed at every call ("dynamic tensorwise"
scaling, the recipe torchao and torchtitan use for Llama training). The three matmuls of a layer
(output, input gradient, weight gradient) all run in FP8 and write bf16; the weights, their
gradients and the optimizer stay in their own dtype, so FP8 is only the arithmetic.

The language-model head stays bf16: its logits feed the loss directly, and recipes that train
in FP8 keep it out (`DEFAULT_SKIP`). Weights frozen under LoRA are quantized at every call too:
reading them costs about 1% of a step, less than keeping a second copy in sync would.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
# _scaled_mm needs every dimension to be a multiple of 16; smaller or odd layers stay bf16.
ALIGNMENT = 16
DEFAULT_SKIP = ("lm_head",)


def float8_supported(device: torch.device) -> bool:
    """FP8 tensor cores: compute capability 8.9 (Ada) or 9.0+ (Hopper, Blackwell)."""
    if device.type != "cuda":
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


def quantize(t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(t in FP8, the fp32 scale that turns it back): the tensor's absolute maximum maps to the
    format's largest finite value."""
    fmax = torch.finfo(dtype).max
    amax = t.detach().abs().amax().float().clamp(min=1e-12)
    scale = fmax / amax
    q = (t.float() * scale).clamp(-fmax, fmax).to(dtype)
    return q, scale.reciprocal()


def _column_major(t: torch.Tensor) -> torch.Tensor:
    """The same matrix laid out column by column, as _scaled_mm wants its second operand."""
    return t.t().contiguous().t()


class _Float8Matmul(torch.autograd.Function):
    """y = x @ w.T with all three matmuls of forward and backward in FP8."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        xq, x_scale = quantize(x, E4M3)
        wq, w_scale = quantize(weight, E4M3)
        # wq is [out, in] row-major, so wq.t() is the column-major [in, out] operand.
        out = torch._scaled_mm(
            xq, wq.t(), scale_a=x_scale, scale_b=w_scale, out_dtype=x.dtype, use_fast_accum=True
        )
        # The FP8 copies are what the backward needs: half the bytes of bf16 activations.
        ctx.save_for_backward(xq, x_scale, wq, w_scale)
        ctx.weight_dtype = weight.dtype
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        xq, x_scale, wq, w_scale = ctx.saved_tensors
        gq, g_scale = quantize(grad.contiguous(), E5M2)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch._scaled_mm(
                gq, _column_major(wq), scale_a=g_scale, scale_b=w_scale, out_dtype=grad.dtype
            )
        if ctx.needs_input_grad[1]:
            grad_w = torch._scaled_mm(
                gq.t().contiguous(),
                _column_major(xq),
                scale_a=g_scale,
                scale_b=x_scale,
                out_dtype=ctx.weight_dtype,
            )
        return grad_x, grad_w


def _aligned(*sizes: int) -> bool:
    return all(size % ALIGNMENT == 0 for size in sizes)


class Float8Linear(torch.nn.Linear):
    """An nn.Linear whose matmuls run in FP8. Same parameters and state-dict keys as the
    nn.Linear it replaces, so checkpoints, PEFT adapters and merging see a plain Linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.weight.dtype)
        rows = x.numel() // x.shape[-1]
        if not _aligned(rows, self.in_features, self.out_features):
            return F.linear(x, self.weight, self.bias)
        out: torch.Tensor = _Float8Matmul.apply(x.reshape(rows, self.in_features), self.weight)
        out = out.reshape(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias


def convert_to_float8(model: torch.nn.Module, skip: Iterable[str] = DEFAULT_SKIP) -> int:
    """Turn every nn.Linear of `model` whose name does not end with one of `skip` into a
    Float8Linear, in place (no parameter is copied); returns how many were converted."""
    skipped = tuple(skip)
    converted = 0
    for name, module in model.named_modules():
        if type(module) is torch.nn.Linear and not name.endswith(skipped):
            module.__class__ = Float8Linear
            converted += 1
    return converted
