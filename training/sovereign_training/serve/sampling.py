"""Pure pieces of decoding: choosing the next token, and where stop sequences cut the text."""

from __future__ import annotations

import torch

# Temperatures this close to 0 are greedy: dividing logits by them overflows float32.
GREEDY_BELOW = 1e-5


def select_next_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator
) -> int:
    """Pick the next token id from one position's logits (shape ``[vocab]``).

    Temperature 0 (or below ``GREEDY_BELOW``) is greedy. Otherwise sample from
    softmax(logits / temperature), restricted to the smallest set of most likely tokens whose
    mass reaches ``top_p``.
    """
    if temperature < GREEDY_BELOW:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep a token while the mass before it is still short of top_p. The first always
        # stays, also when top_p is too small for float32 to tell from 0.
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        keep = before < top_p
        keep[0] = True
        sorted_probs = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
        pick = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[pick].item())
    return int(torch.multinomial(probs, 1, generator=generator).item())


def find_stop(text: str, stops: tuple[str, ...], start: int = 0) -> int | None:
    """Index in ``text`` (at or after ``start``) where the earliest stop sequence begins."""
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None


def safe_length(text: str, stops: tuple[str, ...]) -> int:
    """How much of ``text`` can be sent now: all but a tail that may begin a stop sequence."""
    held = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:size]):
                held = size
                break
    return len(text) - held
