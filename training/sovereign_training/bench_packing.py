"""Useful tokens per second on real row lengths: a plain padded loop against the packed path.

Chat rows are not 2048 tokens long. The lengths here are the sample dataset's
(examples/data/eu-data-protection-chat.jsonl), rendered with the chat template and tokenized
by the tokenizer the tests and the demo train on it (tiny.py), exactly as the training path
encodes them (data.encode_rows), with the loss only on assistant turns.

Both rows train, step by step, on the same rows: those the training path packs into
--global-batch blocks of --seq tokens (data.pack_encoded: best-fit decreasing, positions
restarting at each row so rows do not attend to each other). Only the batching differs:
- plain-padded: the plain-full loop (fp32 weights + bf16 autocast, eager), the step's rows in
  micro-batches of `padded_rows_per_micro_batch` rows, each padded to its longest row, with an
  attention mask: what a user's first loop does;
- project-packed: the training path on the blocks, every lever of the project-full row.
Both count only non-padding tokens, and their losses follow each other.
"""

from __future__ import annotations

import argparse
import random
from typing import Any

from .bench import (
    Row,
    build_plain,
    build_project,
    make_step,
    parse_variant,
    peak_memory_gib,
    time_steps,
)

SEED = 7


def sample_rows() -> tuple[Any, list[Any]]:
    """(tokenizer, rows) of the sample chat dataset."""
    from .data import read_rows
    from .tiny import sample_dataset_path, texts_from_jsonl, train_tokenizer

    path = sample_dataset_path()
    tokenizer = train_tokenizer(texts_from_jsonl(path))
    return tokenizer, read_rows(path, "chat", "sample dataset")


def _repeat(rows: list[Any], count: int) -> list[Any]:
    """`count` rows: the dataset shuffled, again and again (a fresh order each pass)."""
    rng = random.Random(SEED)
    out: list[Any] = []
    while len(out) < count:
        order = list(rows)
        rng.shuffle(order)
        out.extend(order)
    return out[:count]


def _padded(encoded: list[Any], device: Any) -> tuple[dict[str, Any], int]:
    """One micro-batch padded to its longest row; (batch, tokens computed)."""
    import torch

    from .data import IGNORE_INDEX

    longest = max(len(e.input_ids) for e in encoded)
    ids = torch.zeros((len(encoded), longest), dtype=torch.long)
    labels = torch.full((len(encoded), longest), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(encoded), longest), dtype=torch.long)
    for i, e in enumerate(encoded):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    batch = {"input_ids": ids.to(device), "labels": labels.to(device), "mask": mask.to(device)}
    return batch, len(encoded) * longest


def padded_rows_per_micro_batch(shape: dict[str, int]) -> int:
    """Rows per micro-batch of the padded loop: a user's batch size for short chat rows, 32 at
    the preset's micro-batch of 4 x 2048 tokens (the plain loop's token budget, / 256)."""
    return max(1, shape["micro_batch"] * shape["seq"] // 256)


def measure_packing(
    variant: str, shape: dict[str, int], device: Any, args: argparse.Namespace, speedups: Any
) -> Row:
    """Both rows train on the same rows at each step: those the training path packs into
    --global-batch blocks; only the batching differs."""
    import torch

    from .data import encode_rows, pack_encoded

    base, lever = parse_variant(variant)
    seq, global_batch = shape["seq"], shape["global_batch"]
    warmup, total_steps = shape["warmup"], shape["warmup"] + shape["steps"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tokenizer, rows = sample_rows()
    # Encoded once, then repeated in fresh orders until the rows fill every step's blocks with a
    # fifth to spare (packing leaves some of each block empty).
    once, _ = encode_rows(tokenizer, rows, seq)
    mean_tokens = sum(len(e.input_ids) for e in once) / max(1, len(once))
    needed = int(total_steps * global_batch * seq * 1.2 / max(1.0, mean_tokens)) + 1
    encoded = _repeat(once, needed)
    blocks = pack_encoded(encoded, seq, tokenizer.pad_token_id or 0)
    if len(blocks) < total_steps * global_batch:
        raise RuntimeError(f"only {len(blocks)} blocks for {total_steps} steps")
    order = list(range(len(blocks)))
    random.Random(SEED).shuffle(order)  # as the loop's epoch order mixes long and short blocks
    steps = []
    useful = computed = 0
    if base == "plain-padded":
        loss_fn, optimizer, _ = build_plain(variant, shape, device, args.lora_rank)
        micro = padded_rows_per_micro_batch(shape)
        for s in range(total_steps):
            members = sorted(
                i
                for b in order[s * global_batch : (s + 1) * global_batch]
                for i in blocks.members[b]
            )
            step_rows = [encoded[i] for i in members]
            batches = []
            for m in range(0, len(step_rows), micro):
                batch, tokens = _padded(step_rows[m : m + micro], device)
                batches.append(batch)
                if s >= warmup:
                    computed += tokens
                    useful += sum(len(e.input_ids) for e in step_rows[m : m + micro])
            steps.append(make_step(loss_fn, optimizer, batches))
        used = ""
    elif base == "project-packed":
        levers = speedups.without("fused_lora")
        if lever:
            levers = levers.without(lever)
        loss_fn, optimizer, micro = build_project(
            "project-full", shape, device, args.lora_rank, levers, blocks.documents_per_block()
        )
        for s in range(total_steps):
            batches = []
            for m in range(s * global_batch, (s + 1) * global_batch, micro):
                pick = torch.tensor(order[m : m + micro])
                batches.append(
                    {
                        "input_ids": blocks.input_ids[pick].to(device),
                        "labels": blocks.labels[pick].to(device),
                        "position_ids": blocks.position_ids[pick].to(device),
                    }
                )
                if s >= warmup:
                    computed += micro * seq
                    useful += int(blocks.real_tokens[pick].sum())
            steps.append(make_step(loss_fn, optimizer, batches))
        used = levers.describe()
    else:
        raise ValueError(f"not a packing variant: {variant}")
    elapsed, losses = time_steps(steps, warmup, shape["steps"], device)
    return Row(
        variant=variant,
        micro_batch=micro,
        tokens_per_second=useful / elapsed,
        step_seconds=elapsed / shape["steps"],
        tflops=None,
        mfu=None,
        peak_memory_gib=peak_memory_gib(device),
        speedups=used,
        losses=losses,
        padding_share=1 - useful / computed,
    )
