"""Tokenisation, loss masking, packing, data order and config parsing, on the tiny tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from sovereign_training.config import ConfigError, parse_config
from sovereign_training.data import (
    FALLBACK_CHAT_TEMPLATE,
    IGNORE_INDEX,
    DatasetError,
    build_blocks,
    encode_conversation,
    encode_rows,
    ensure_chat_template,
    epoch_order,
    pack,
    plan_step,
    read_rows,
)

from .conftest import job_dict

pytestmark = pytest.mark.training

CONVERSATION = [
    {"role": "system", "content": "You explain EU rules."},
    {"role": "user", "content": "What is the GDPR?"},
    {"role": "assistant", "content": "Regulation (EU) 2016/679."},
    {"role": "user", "content": "Since when?"},
    {"role": "assistant", "content": "Since 25 May 2018."},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture
def plain_tokenizer(tiny_model: Path) -> PreTrainedTokenizerBase:
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = None
    return tok


def _trained_text(tok: PreTrainedTokenizerBase, ids: list[int], labels: list[int]) -> str:
    return str(tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]))


def test_loss_only_on_assistant_turns_with_chat_template(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    enc = encode_conversation(tokenizer, CONVERSATION)
    assert tokenizer.decode(enc.input_ids) == tokenizer.apply_chat_template(
        CONVERSATION, tokenize=False
    )
    trained = _trained_text(tokenizer, enc.input_ids, enc.labels)
    assert trained == "Regulation (EU) 2016/679.<|im_end|>\nSince 25 May 2018.<|im_end|>\n"
    assert "GDPR" not in trained
    assert "EU rules" not in trained


def test_fallback_template_when_tokenizer_has_none(
    plain_tokenizer: PreTrainedTokenizerBase,
) -> None:
    assert ensure_chat_template(plain_tokenizer) is True
    assert plain_tokenizer.chat_template == FALLBACK_CHAT_TEMPLATE
    enc = encode_conversation(plain_tokenizer, CONVERSATION[:3])
    text = plain_tokenizer.decode(enc.input_ids)
    assert text == (
        "### System:\nYou explain EU rules.\n\n### User:\nWhat is the GDPR?\n\n"
        "### Assistant:\nRegulation (EU) 2016/679.<|im_end|>\n\n"
    )
    assert _trained_text(plain_tokenizer, enc.input_ids, enc.labels) == (
        "Regulation (EU) 2016/679.<|im_end|>\n\n"
    )
    assert ensure_chat_template(plain_tokenizer) is False  # already has one now


def test_instruct_and_text_rows(tokenizer: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    instruct = tmp_path / "i.jsonl"
    instruct.write_text(
        json.dumps({"prompt": "Define DPIA.", "completion": "An impact assessment."}) + "\n"
    )
    rows = read_rows(instruct, "instruct", "dataset.trainingUri")
    (enc,), _ = encode_rows(tokenizer, rows, 512)
    assert (
        _trained_text(tokenizer, enc.input_ids, enc.labels) == "An impact assessment.<|im_end|>\n"
    )
    text = tmp_path / "t.jsonl"
    text.write_text(json.dumps({"text": "Article 5 sets principles."}) + "\n")
    (enc,), _ = encode_rows(tokenizer, read_rows(text, "text", "dataset.trainingUri"), 512)
    assert enc.input_ids[-1] == tokenizer.eos_token_id
    assert enc.labels[0] == IGNORE_INDEX
    assert enc.labels[1:] == enc.input_ids[1:]


@pytest.mark.parametrize(
    ("fmt", "row", "message"),
    [
        ("chat", {"text": "x"}, "format 'chat' needs a non-empty list 'messages'"),
        ("chat", {"messages": [{"role": "bot", "content": "x"}]}, "messages[0] needs 'role'"),
        ("chat", {"messages": [{"role": "user", "content": "x"}]}, "at least one assistant"),
        ("instruct", {"prompt": "x"}, "'prompt' and 'completion'"),
        ("text", {"messages": []}, "non-empty string field 'text'"),
    ],
)
def test_bad_rows_name_field_and_line(
    tmp_path: Path, fmt: str, row: dict[str, Any], message: str
) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps(
            {
                "text": "ok",
                "prompt": "p",
                "completion": "c",
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ],
            }
        )
        + "\n"
        + json.dumps(row)
        + "\n"
    )
    with pytest.raises(DatasetError) as err:
        read_rows(path, fmt, "dataset.trainingUri")
    assert str(err.value).startswith("dataset.trainingUri line 2: ")
    assert message in str(err.value)


def test_truncation_and_dropped_rows(tokenizer: PreTrainedTokenizerBase) -> None:
    long_prompt = [
        {"role": "user", "content": "word " * 200},
        {"role": "assistant", "content": "ok"},
    ]
    short = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a " * 100}]
    encoded, stats = encode_rows(tokenizer, [long_prompt, short], 32)
    assert (stats.rows, stats.truncated, stats.dropped) == (2, 2, 1)
    assert len(encoded) == 1
    assert len(encoded[0].input_ids) == 32


def test_pack_best_fit_keeps_every_sequence_once() -> None:
    lengths = [7, 3, 5, 2, 8, 1, 4, 6]
    bins = pack(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 4  # 36 tokens in blocks of 10
    assert pack(lengths, 10) == bins
    with pytest.raises(ValueError, match="more than the block size"):
        pack([11], 10)


def test_blocks_restart_positions_and_mask_padding(
    tokenizer: PreTrainedTokenizerBase, chat_rows: list[str]
) -> None:
    rows = [json.loads(r)["messages"] for r in chat_rows[:20]]
    blocks = build_blocks(tokenizer, rows, 256)
    assert blocks.input_ids.shape[1] == 256
    encoded, _ = encode_rows(tokenizer, rows, 256)
    assert int(blocks.real_tokens.sum()) == sum(len(e.input_ids) for e in encoded)
    starts = int((blocks.position_ids == 0).sum())
    padded = int((blocks.real_tokens < 256).sum())
    assert starts == len(encoded) + padded  # each sequence and each padding tail restarts at 0
    for b in range(len(blocks)):
        real = int(blocks.real_tokens[b])
        assert torch.all(blocks.labels[b, real:] == IGNORE_INDEX)
        assert torch.all(blocks.input_ids[b, real:] == tokenizer.pad_token_id)
    labelled = int((blocks.labels != IGNORE_INDEX).sum())
    assert labelled == sum(sum(lab != IGNORE_INDEX for lab in e.labels) for e in encoded)


def test_packed_sequences_do_not_attend_to_each_other(tiny_model: Path) -> None:
    """Restarted position ids give a block-diagonal mask (training runs without a KV cache)."""
    from transformers import AutoModelForCausalLM

    # transformers' PreTrainedModel.eval carries no annotations.
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()  # type: ignore[no-untyped-call]
    a, b = [5, 9, 30, 41, 7], [12, 66, 3]
    with torch.no_grad():
        alone = model(torch.tensor([b]), use_cache=False).logits[0]
        packed = model(
            torch.tensor([a + b]),
            position_ids=torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]]),
            use_cache=False,
        ).logits[0]
    torch.testing.assert_close(packed[len(a) :], alone, atol=1e-5, rtol=1e-5)


def test_data_order_is_deterministic_and_global_batch_independent_of_workers() -> None:
    assert epoch_order(50, 3, 0) == epoch_order(50, 3, 0)
    assert epoch_order(50, 3, 0) != epoch_order(50, 3, 1)
    assert sorted(epoch_order(50, 3, 1)) == list(range(50))
    one = plan_step(
        7, num_blocks=50, batch_size=8, micro_batch_size=2, rank=0, world_size=1, seed=3
    )
    two = [
        plan_step(7, num_blocks=50, batch_size=8, micro_batch_size=2, rank=r, world_size=2, seed=3)
        for r in (0, 1)
    ]
    assert one.epoch == 1  # 6 steps per epoch
    assert len(one.micro_batches) == 4
    assert all(len(m) == 2 for m in one.micro_batches)
    assert [i for p in two for m in p.micro_batches for i in m] == one.global_blocks
    assert all(len(p.micro_batches) == 2 for p in two)


def test_config_parses_the_contract_and_resolves_accumulation(
    tiny_model: Path, tmp_path: Path
) -> None:
    cfg = parse_config(job_dict(tiny_model, tmp_path / "d.jsonl"))
    assert cfg.method.hyperparameters.batch_size == 4
    assert cfg.accumulation_steps() == 2  # 4 = 1 x 2 x 2 workers
    assert cfg.accumulation_steps(workers=1) == 4
    assert cfg.dataset.expected_sha256 is None
    round_trip = json.loads(cfg.model_dump_json(by_alias=True))
    assert round_trip["method"]["hyperparameters"]["microBatchSize"] == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda j: j["method"]["hyperparameters"].update(batchSize=5),
            "method.hyperparameters.batchSize (5) must be a multiple",
        ),
        (lambda j: j["method"].update(type="lora"), "method.lora is required"),
        (lambda j: j["dataset"].update(format="csv"), "dataset.format"),
        (lambda j: j["dataset"].update(sha256="abc"), "dataset.sha256"),
        (lambda j: j["resources"].update(gpus=1), "resources.gpus"),
        (lambda j: j.update(kind="FineTuneJob"), "kind"),
        (
            lambda j: j["method"]["hyperparameters"].update(learningRate="auto"),
            "method.hyperparameters.learningRate",
        ),
    ],
)
def test_config_errors_name_the_field(
    tiny_model: Path, tmp_path: Path, mutate: Any, message: str
) -> None:
    job = job_dict(tiny_model, tmp_path / "d.jsonl")
    mutate(job)
    with pytest.raises(ConfigError) as err:
        parse_config(job)
    assert message in str(err.value)
