"""LoRA forward precision: fp32 adapters compute in bf16 under autocast when the base is bf16."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sovereign_training.config import LoraSettings
from sovereign_training.modeling import adapter_precision, add_lora

pytestmark = pytest.mark.training

CPU = torch.device("cpu")


def tiny_lora_model(dtype: torch.dtype) -> torch.nn.Module:
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        use_cache=False,
    )
    torch.manual_seed(0)
    # transformers wraps PreTrainedModel.to with functools.wraps, which mypy does not bind as a
    # method.
    base = LlamaForCausalLM(config).to(dtype=dtype)  # type: ignore[call-arg]
    settings = LoraSettings(rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    model: torch.nn.Module = add_lora(base, settings, gradient_checkpointing=False)
    return model


@pytest.mark.parametrize(
    ("dtype", "lora"), [(torch.float32, True), (torch.bfloat16, False), (torch.float32, False)]
)
def test_no_autocast_where_nothing_is_cast(dtype: torch.dtype, lora: bool) -> None:
    with adapter_precision(CPU, dtype, lora=lora):
        assert not torch.is_autocast_enabled("cpu")


def test_fp32_adapters_on_a_bf16_base_compute_in_bf16_and_keep_fp32_grads() -> None:
    model = tiny_lora_model(torch.bfloat16)
    adapters = [p for p in model.parameters() if p.requires_grad]
    assert adapters
    assert {p.dtype for p in adapters} == {torch.float32}  # PEFT keeps them fp32
    lora_a = model.get_submodule("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default")
    seen: list[torch.dtype] = []
    lora_a.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    ids = torch.randint(0, 128, (2, 16))
    with adapter_precision(CPU, torch.bfloat16, lora=True):
        assert torch.is_autocast_enabled("cpu")
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert seen == [torch.bfloat16]  # the adapter matmul ran in bf16, not on an fp32 copy
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in adapters)
