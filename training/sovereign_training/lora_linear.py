"""A LoRA forward for training, in place of PEFT's general one.

PEFT's `lora.Linear.forward` serves every adapter variant, mixed batches and merging; for one
plain adapter in training it also casts the layer's input to the adapters' fp32 and back, which
is why the loop used to run LoRA under bf16 autocast. This forward computes the same function,
base(x) + scaling * B(A(dropout(x))), with the adapter matmuls in the base's dtype (bf16 on a
GPU) while the adapter weights, their gradients and the optimizer stay fp32, and with no
autocast: torch.compile sees a short graph.

Only the class of each adapted layer changes (`use_fused_lora`): parameters, state-dict keys,
`save_pretrained` and `merge_and_unload` are PEFT's own. Anything but one plain active adapter
goes through PEFT's forward.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from peft.tuners.lora import Linear as PeftLoraLinear


class FusedLoraLinear(PeftLoraLinear):
    """PEFT's lora.Linear with a training-time forward for one plain adapter."""

    def _single_plain_adapter(self) -> str | None:
        if self.disable_adapters or self.merged or len(self.active_adapters) != 1:
            return None
        name: str = self.active_adapters[0]
        if name not in self.lora_A or name in getattr(self, "lora_variant", {}):
            return None
        return name

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        name = None if args or kwargs else self._single_plain_adapter()
        if name is None:
            out: torch.Tensor = super().forward(x, *args, **kwargs)
            return out
        result: torch.Tensor = self.base_layer(x)
        dtype = result.dtype
        a = cast(torch.Tensor, self.lora_A[name].weight).to(dtype)
        b = cast(torch.Tensor, self.lora_B[name].weight).to(dtype)
        h = self.lora_dropout[name](x).to(dtype)
        scaling = float(self.scaling[name])
        return result + F.linear(F.linear(h, a), b) * scaling


def use_fused_lora(model: torch.nn.Module) -> int:
    """Give every PEFT lora.Linear of `model` the fused forward, in place; returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is PeftLoraLinear:
            module.__class__ = FusedLoraLinear
            count += 1
    return count
