"""The training path's levers (speedups.py, float8.py, lora_linear.py) compute what the plain
path computes: FP8 matmuls within FP8's rounding, the fused LoRA forward and the loss module
exactly, packed rows the same loss as the rows alone; regional compilation makes one graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from sovereign_training.config import LoraSettings
from sovereign_training.data import IGNORE_INDEX, build_blocks, encode_rows, read_rows
from sovereign_training.float8 import Float8Linear, _Float8Matmul, convert_to_float8
from sovereign_training.lora_linear import FusedLoraLinear, use_fused_lora
from sovereign_training.modeling import add_lora, load_tokenizer
from sovereign_training.speedups import (
    CausalLMLoss,
    Speedups,
    attention_implementation,
    compile_blocks,
)
from sovereign_training.tiny import sample_dataset_path

pytestmark = pytest.mark.training

LORA = LoraSettings(rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"])


def tiny_llama(layers: int = 2, seed: int = 0, attention: str = "sdpa") -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        use_cache=False,
    )
    config._attn_implementation = attention
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float(
        (got.detach().float() - want.detach().float()).norm() / want.detach().float().norm()
    )


def test_fp8_matmul_forward_and_both_gradients_are_within_fp8_rounding() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 96, requires_grad=True)
    w = torch.randn(48, 96, requires_grad=True)
    grad = torch.randn(64, 48)
    out = _Float8Matmul.apply(x, w)
    out.backward(grad)
    x_ref, w_ref = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    # torch.autograd.backward: Tensor.backward carries no annotations.
    torch.autograd.backward(x_ref @ w_ref.t(), grad.double())
    # e4m3 keeps 3 mantissa bits, e5m2 2: a few percent, not more, and never a wrong layout.
    assert relative_error(out, x_ref @ w_ref.t()) < 0.06
    assert x.grad is not None
    assert w.grad is not None
    assert x_ref.grad is not None
    assert w_ref.grad is not None
    assert relative_error(x.grad, x_ref.grad) < 0.1
    assert relative_error(w.grad, w_ref.grad) < 0.1


def test_frozen_weights_get_no_gradient_and_unaligned_layers_stay_exact() -> None:
    layer = torch.nn.Linear(96, 48, bias=True)
    layer.weight.requires_grad_(False)
    layer.__class__ = Float8Linear
    x = torch.randn(4, 16, 96, requires_grad=True)
    layer(x).sum().backward()
    assert layer.weight.grad is None
    assert x.grad is not None
    odd = torch.nn.Linear(10, 6)
    reference = odd(torch.ones(3, 10))
    odd.__class__ = Float8Linear  # 10 and 6 are not multiples of 16: plain matmul
    torch.testing.assert_close(odd(torch.ones(3, 10)), reference)


def test_convert_to_float8_keeps_the_head_and_every_state_dict_key() -> None:
    model = tiny_llama()
    keys = list(model.state_dict())
    converted = convert_to_float8(model)
    assert converted == 2 * 7  # q, k, v, o, gate, up, down in each of the two blocks
    assert type(model.lm_head) is torch.nn.Linear
    assert list(model.state_dict()) == keys


def test_fp8_training_follows_the_plain_loss_curve() -> None:
    """The same model, data and optimizer, 12 steps, with and without FP8 matmuls."""
    ids = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(2))

    def curve(fp8: bool) -> list[float]:
        model = tiny_llama()
        if fp8:
            convert_to_float8(model)
        module = CausalLMLoss(model, compile_head=False)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        losses = []
        for _ in range(12):
            loss = module(ids, ids)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss))
        return losses

    plain, fp8 = curve(False), curve(True)
    assert plain[-1] < plain[0] - 1.0  # it learns: the check below compares two real curves
    for a, b in zip(plain, fp8, strict=True):
        assert abs(a - b) / a < 0.03, (plain, fp8)


def test_loss_module_equals_the_models_own_loss_with_and_without_lora() -> None:
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(3))
    labels = ids.clone()
    labels[:, :5] = IGNORE_INDEX
    count = (labels[:, 1:] != IGNORE_INDEX).sum()
    for lora in (False, True):
        model: Any = tiny_llama()
        if lora:
            model = add_lora(model, LORA, gradient_checkpointing=False)
        want = model(input_ids=ids, labels=labels, num_items_in_batch=count).loss
        got = CausalLMLoss(model, compile_head=False)(ids, labels, num_items_in_batch=count)
        torch.testing.assert_close(got, want)


def test_fused_lora_forward_equals_peft_and_keeps_its_adapters() -> None:
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(4))

    def run(fused: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
        model: Any = add_lora(tiny_llama(), LORA, gradient_checkpointing=False)
        for name, param in model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero; make the adapters matter
                torch.nn.init.normal_(param, std=0.1, generator=torch.Generator().manual_seed(5))
        if fused:
            assert use_fused_lora(model) == 2 * 3
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        return loss, grads

    (plain_loss, plain_grads), (fused_loss, fused_grads) = run(False), run(True)
    torch.testing.assert_close(fused_loss, plain_loss)
    assert plain_grads.keys() == fused_grads.keys()
    for name, grad in plain_grads.items():
        assert grad is not None
        torch.testing.assert_close(fused_grads[name], grad, msg=name)


def test_fused_lora_layers_save_and_merge_as_peft_layers(tmp_path: Path) -> None:
    model: Any = add_lora(tiny_llama(), LORA, gradient_checkpointing=False)
    use_fused_lora(model)
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    merged = model.merge_and_unload()
    assert not any(isinstance(m, FusedLoraLinear) for m in merged.modules())


def test_packed_rows_have_the_loss_of_the_rows_alone(tiny_model: Path) -> None:
    """Packing keeps each row's own attention and positions: the summed token loss of rows
    packed into one block equals the sum over the rows run one by one."""
    tokenizer, _ = load_tokenizer(tiny_model)
    rows = read_rows(sample_dataset_path(), "chat", "sample")[:6]
    # transformers' PreTrainedModel.eval carries no annotations.
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()  # type: ignore[no-untyped-call]
    module = CausalLMLoss(model, compile_head=False)
    blocks = build_blocks(tokenizer, rows, 1024)
    assert len(blocks) == 1
    assert len(blocks.members[0]) == 6
    one = torch.ones((), dtype=torch.long)
    with torch.no_grad():
        packed = module(
            blocks.input_ids, blocks.labels, blocks.position_ids, num_items_in_batch=one
        )
        encoded, _ = encode_rows(tokenizer, rows, 1024)
        alone = sum(
            module(torch.tensor([e.input_ids]), torch.tensor([e.labels]), num_items_in_batch=one)
            for e in encoded
        )
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-4)


def test_regional_compilation_makes_one_graph_for_every_block() -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = tiny_llama(layers=3)
    assert compile_blocks(model) == 3
    module = CausalLMLoss(model, compile_head=False)
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(6))
    eager = CausalLMLoss(tiny_llama(layers=3), compile_head=False)(ids, ids)
    compiled = module(ids, ids)
    compiled.backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    assert counters["stats"]["unique_graphs"] == 1  # three blocks, one compiled graph


@pytest.mark.parametrize("lever", Speedups.names())
def test_each_lever_can_be_left_out(lever: str) -> None:
    levers = Speedups(compile=True, float8=True, flex_attention=True, fused_lora=True)
    assert getattr(levers.without(lever), lever) is False
    assert lever not in levers.without(lever).describe().split(",")
    with pytest.raises(ValueError, match="unknown speedup"):
        levers.without("warp-drive")


def test_cpu_defaults_leave_out_what_needs_a_gpu() -> None:
    levers = Speedups.for_device(torch.device("cpu"))
    assert (levers.compile, levers.float8, levers.flex_attention) == (False, False, False)
    assert levers.fused_lora


def test_flex_attention_only_where_blocks_hold_packed_documents() -> None:
    levers = Speedups(flex_attention=True)
    assert attention_implementation(levers, 1.0) == "sdpa"  # one document: SDPA's causal kernel
    assert attention_implementation(levers, 14.6) == "flex_attention"
    assert attention_implementation(levers.without("flex_attention"), 14.6) == "sdpa"


@pytest.mark.parametrize("attention", ["sdpa", "flex_attention"])
def test_packed_documents_do_not_see_each_other(attention: str) -> None:
    """Two documents in one block (positions restart at the second) give the logits each
    gives alone: the attention the training path loads keeps packed documents apart."""
    first = torch.randint(0, 256, (1, 11), generator=torch.Generator().manual_seed(7))
    second = torch.randint(0, 256, (1, 21), generator=torch.Generator().manual_seed(8))
    packed = torch.cat([first, second], dim=1)
    positions = torch.cat([torch.arange(11), torch.arange(21)]).unsqueeze(0)
    # transformers' PreTrainedModel.eval carries no annotations.
    model = tiny_llama(attention=attention).eval()  # type: ignore[no-untyped-call]
    alone = tiny_llama().eval()  # type: ignore[no-untyped-call]
    with torch.no_grad():
        together = model(input_ids=packed, position_ids=positions).logits
        want = torch.cat([alone(input_ids=first).logits, alone(input_ids=second).logits], dim=1)
    torch.testing.assert_close(together, want, rtol=1e-4, atol=1e-4)
