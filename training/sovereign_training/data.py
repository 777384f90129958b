"""Tokenisation, loss masking and sequence packing.

Every row becomes a token sequence and a label sequence (-100 where no loss is taken):
- chat rows ({"messages": [...]}) are rendered with the tokenizer's chat template; loss is taken
  on each assistant turn, including the tokens that close it (so the model learns to stop),
  and not on system or user turns;
- instruct rows ({"prompt", "completion"}) are a one-turn chat: user prompt, assistant completion;
- text rows ({"text"}) are trained on every token, followed by the EOS token.
A tokenizer without a chat template gets FALLBACK_CHAT_TEMPLATE, which is saved with the
fine-tuned model so serving formats prompts the same way.

Sequences longer than maxSeqLength are cut to it; a row left with no label token is dropped.
Sequences are packed whole (best-fit decreasing) into blocks of exactly maxSeqLength tokens;
position ids restart at 0 for each sequence, which transformers turns into a block-diagonal
attention mask, so packed sequences do not attend to each other.
"""

from __future__ import annotations

import bisect
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")

FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '### ' + message['role'] | capitalize + ':\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\n\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\n' }}{% endif %}"
)


class DatasetError(ValueError):
    """A dataset row that does not fit the declared format; names the field and line."""


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]


@dataclass
class EncodeStats:
    rows: int = 0
    truncated: int = 0
    dropped: int = 0


@dataclass
class Blocks:
    """Packed training blocks, each exactly max_seq_length tokens."""

    input_ids: torch.Tensor  # [n, S] int64
    labels: torch.Tensor  # [n, S] int64, IGNORE_INDEX where no loss is taken
    position_ids: torch.Tensor  # [n, S] int64
    real_tokens: torch.Tensor  # [n] int64, tokens that are not padding
    stats: EncodeStats = field(default_factory=EncodeStats)
    members: list[list[int]] = field(default_factory=list)  # the sequences in each block

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def documents_per_block(self) -> float:
        """How many sequences a block holds on average (1.0 when not known)."""
        if not self.members or len(self) == 0:
            return 1.0
        return sum(len(m) for m in self.members) / len(self)


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Give the tokenizer the fallback template when it has none; True when it did.
    Also sets a pad token (EOS) when the tokenizer has none."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return True


def read_rows(path: Path, fmt: str, field_name: str) -> list[list[dict[str, str]] | str]:
    """Rows of a JSONL file as conversations (chat, instruct) or strings (text)."""
    rows: list[list[dict[str, str]] | str] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{field_name} line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{where}: not valid JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise DatasetError(f"{where}: each line must be a JSON object")
            rows.append(_row_content(row, fmt, where))
    if not rows:
        raise DatasetError(f"{field_name}: the dataset has no rows")
    return rows


def _row_content(row: dict[str, Any], fmt: str, where: str) -> list[dict[str, str]] | str:
    if fmt == "text":
        text = row.get("text")
        if not isinstance(text, str) or not text:
            raise DatasetError(f"{where}: format 'text' needs a non-empty string field 'text'")
        return text
    if fmt == "instruct":
        prompt, completion = row.get("prompt"), row.get("completion")
        if not isinstance(prompt, str) or not isinstance(completion, str) or not completion:
            raise DatasetError(
                f"{where}: format 'instruct' needs string fields 'prompt' and 'completion'"
            )
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DatasetError(f"{where}: format 'chat' needs a non-empty list 'messages'")
    out: list[dict[str, str]] = []
    for i, msg in enumerate(messages):
        role = msg.get("role") if isinstance(msg, dict) else None
        content = msg.get("content") if isinstance(msg, dict) else None
        if role not in ROLES or not isinstance(content, str):
            raise DatasetError(
                f"{where}: messages[{i}] needs 'role' (one of {', '.join(ROLES)}) and a "
                "string 'content'"
            )
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise DatasetError(f"{where}: a chat row needs at least one assistant message")
    return out


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], gen: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
    assert isinstance(text, str)
    return text


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn.

    A span runs from the end of the generation prompt before the turn to the end of the turn's
    rendering, so it covers the end-of-turn tokens. Templates that do not render prefixes
    stably fall back to the span of the assistant's content alone.
    """
    full = _render(tokenizer, messages, gen=False)
    spans: list[tuple[int, int]] = []
    search_from = 0
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], gen=True) if i else ""
        upto = _render(tokenizer, messages[: i + 1], gen=False)
        if full.startswith(upto) and upto.startswith(before) and len(upto) > len(before):
            spans.append((len(before), len(upto)))
            search_from = len(upto)
            continue
        start = full.find(msg["content"], search_from)
        if start < 0:
            raise DatasetError("the chat template drops assistant content; cannot mask the loss")
        spans.append((start, start + len(msg["content"])))
        search_from = start + len(msg["content"])
    return full, spans


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]
) -> Encoded:
    """Token ids of the rendered conversation, with labels only on assistant turns."""
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets: list[tuple[int, int]] = list(enc["offset_mapping"])
    labels = [IGNORE_INDEX] * len(ids)
    for i, (start, end) in enumerate(offsets):
        if end > start and any(s <= start < e for s, e in spans):
            labels[i] = ids[i]
    if _adds_bos(tokenizer) and ids[:1] != [tokenizer.bos_token_id]:
        ids.insert(0, tokenizer.bos_token_id)
        labels.insert(0, IGNORE_INDEX)
    return Encoded(ids, labels)


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> Encoded:
    """Plain text, trained on every token, then EOS."""
    ids: list[int] = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    if _adds_bos(tokenizer):
        ids.insert(0, tokenizer.bos_token_id)
    return Encoded(ids, list(ids))


def encode_rows(
    tokenizer: PreTrainedTokenizerBase,
    rows: list[list[dict[str, str]] | str],
    max_seq_length: int,
) -> tuple[list[Encoded], EncodeStats]:
    """Encode, cut to max_seq_length, and drop rows left without a label token."""
    stats = EncodeStats(rows=len(rows))
    out: list[Encoded] = []
    for row in rows:
        enc = (
            encode_text(tokenizer, row)
            if isinstance(row, str)
            else encode_conversation(tokenizer, row)
        )
        ids, labels = enc.input_ids, enc.labels
        if len(ids) > max_seq_length:
            stats.truncated += 1
            ids, labels = ids[:max_seq_length], labels[:max_seq_length]
        # The first token of a sequence has nothing before it to predict it from.
        labels = [IGNORE_INDEX, *labels[1:]]
        if all(label == IGNORE_INDEX for label in labels):
            stats.dropped += 1
            continue
        out.append(Encoded(ids, labels))
    return out, stats


def pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing bin packing of sequence lengths; returns bins of indices.

    Deterministic: ties are broken by index.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (remaining capacity, bin index)
    for i in order:
        need = lengths[i]
        if need > capacity:
            raise ValueError(f"sequence {i} has {need} tokens, more than the block size {capacity}")
        pos = bisect.bisect_left(free, (need, -1))
        if pos < len(free):
            remaining, b = free.pop(pos)
            bins[b].append(i)
            bisect.insort(free, (remaining - need, b))
        else:
            bins.append([i])
            bisect.insort(free, (capacity - need, len(bins) - 1))
    return bins


def build_blocks(
    tokenizer: PreTrainedTokenizerBase,
    rows: list[list[dict[str, str]] | str],
    max_seq_length: int,
) -> Blocks:
    """Encode rows and pack them into fixed-size blocks (see module doc)."""
    encoded, stats = encode_rows(tokenizer, rows, max_seq_length)
    if not encoded:
        raise DatasetError("no row has a token to train on after tokenisation")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return pack_encoded(encoded, max_seq_length, pad_id, stats)


def pack_encoded(
    encoded: list[Encoded], max_seq_length: int, pad_id: int, stats: EncodeStats | None = None
) -> Blocks:
    """Pack encoded sequences whole into blocks of max_seq_length tokens (module doc);
    Blocks.members says which sequences each block holds."""
    import torch

    bins = pack([len(e.input_ids) for e in encoded], max_seq_length)
    n = len(bins)
    input_ids = torch.full((n, max_seq_length), pad_id, dtype=torch.long)
    labels = torch.full((n, max_seq_length), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((n, max_seq_length), dtype=torch.long)
    real = torch.zeros(n, dtype=torch.long)
    for b, members in enumerate(bins):
        offset = 0
        for i in members:
            enc = encoded[i]
            length = len(enc.input_ids)
            input_ids[b, offset : offset + length] = torch.tensor(enc.input_ids)
            labels[b, offset : offset + length] = torch.tensor(enc.labels)
            position_ids[b, offset : offset + length] = torch.arange(length)
            offset += length
        real[b] = offset
        # Padding is its own segment (positions restart), so no sequence attends to it.
        position_ids[b, offset:] = torch.arange(max_seq_length - offset)
    return Blocks(input_ids, labels, position_ids, real, stats or EncodeStats(), bins)


def epoch_order(num_blocks: int, seed: int, epoch: int) -> list[int]:
    """The block order of one epoch: a permutation that depends only on (seed, epoch), so a
    restarted run sees the same data in the same order."""
    order = list(range(num_blocks))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


@dataclass(frozen=True)
class StepPlan:
    """Which blocks one optimizer step uses, globally and on one worker."""

    epoch: int
    global_blocks: list[int]
    micro_batches: list[list[int]]  # this worker's micro-batches, in order


def plan_step(
    step: int,
    *,
    num_blocks: int,
    batch_size: int,
    micro_batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
) -> StepPlan:
    """Blocks for optimizer step `step` (0-based). The global batch is the same whatever the
    number of workers; worker r takes its contiguous share, split into micro-batches."""
    steps_per_epoch = num_blocks // batch_size
    epoch, index = divmod(step, steps_per_epoch)
    order = epoch_order(num_blocks, seed, epoch)
    global_blocks = order[index * batch_size : (index + 1) * batch_size]
    share = batch_size // world_size
    mine = global_blocks[rank * share : (rank + 1) * share]
    micro = [mine[i : i + micro_batch_size] for i in range(0, share, micro_batch_size)]
    return StepPlan(epoch, global_blocks, micro)
