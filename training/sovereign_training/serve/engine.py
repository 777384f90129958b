"""Token-by-token generation over one loaded model, one request at a time.

A manual decoding loop (rather than ``model.generate``) gives exact control over stop
sequences, streaming deltas, cancellation and token counts. A lock serialises requests: one
CPU model answers one request at a time, and interleaving would only slow both down.
"""

from __future__ import annotations

import inspect
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from sovereign_training.serve.sampling import find_stop, safe_length, select_next_token

# Prompt tokens decoded together with the completion, so that tokenizers which drop a leading
# space at the start of a decode (SentencePiece) still give the completion its first space.
_DECODE_CONTEXT = 4
_REPLACEMENT_CHAR = "\ufffd"


@dataclass(frozen=True)
class SamplingParams:
    """What the API asked for, resolved to concrete values."""

    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None


@dataclass(frozen=True)
class Finished:
    """The last event of a generation: any text still held back, why it ended, and counts."""

    text: str
    finish_reason: Literal["stop", "length"]
    completion_tokens: int


class _Decoder:
    """Decodes the completion so far, consistently with the prompt it follows."""

    def __init__(self, tokenizer: Any, prompt_ids: list[int]) -> None:
        self._tokenizer = tokenizer
        self._context = prompt_ids[-_DECODE_CONTEXT:]
        self._context_text = self._decode(self._context)

    def _decode(self, ids: list[int]) -> str:
        text = self._tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return str(text)

    def text(self, generated: list[int]) -> str:
        full = self._decode(self._context + generated)
        if full.startswith(self._context_text):
            return full[len(self._context_text) :]
        return self._decode(generated)


class Engine:
    """A loaded causal LM and its tokenizer, with the context limit the server enforces."""

    def __init__(self, model: Any, tokenizer: Any, max_model_len: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self._lock = threading.Lock()
        self._eos_ids = _eos_ids(model, tokenizer)
        # transformers 5 renamed the KV cache argument and output field; 4.x calls it
        # past_key_values. Pick whichever this model's forward takes.
        forward_params = inspect.signature(model.forward).parameters
        self._cache_name = "cache" if "cache" in forward_params else "past_key_values"

    def encode(self, text: str, *, add_special_tokens: bool) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
        return [int(i) for i in ids]

    def vocab_size(self) -> int:
        return int(self.model.get_input_embeddings().num_embeddings)

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, cancel: threading.Event
    ) -> Iterator[str | Finished]:
        """Yield text deltas as they become safe to send, then one ``Finished``.

        Holds the engine's lock for the whole generation; stops early, yielding nothing more,
        once ``cancel`` is set (the client went away).
        """
        with self._lock, torch.inference_mode():
            yield from self._generate(prompt_ids, params, cancel)

    def _generate(
        self, prompt_ids: list[int], params: SamplingParams, cancel: threading.Event
    ) -> Iterator[str | Finished]:
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        generator = torch.Generator().manual_seed(seed)
        decoder = _Decoder(self.tokenizer, prompt_ids)
        longest_stop = max((len(s) for s in params.stop), default=0)
        generated: list[int] = []
        text = ""
        sent = 0
        past: Any = None
        step_input = torch.tensor([prompt_ids], dtype=torch.long)
        for _ in range(params.max_tokens):
            if cancel.is_set():
                return
            out = self.model(input_ids=step_input, use_cache=True, **{self._cache_name: past})
            past = getattr(out, self._cache_name)
            token = select_next_token(
                out.logits[0, -1], params.temperature, params.top_p, generator
            )
            if token in self._eos_ids:
                yield Finished(text[sent:], "stop", len(generated) + 1)
                return
            generated.append(token)
            step_input = torch.tensor([[token]], dtype=torch.long)
            text = decoder.text(generated)
            if params.stop:
                cut = find_stop(text, params.stop, max(0, sent - longest_stop))
                if cut is not None:
                    yield Finished(text[sent : max(cut, sent)], "stop", len(generated))
                    return
            if text.endswith(_REPLACEMENT_CHAR):
                continue  # a multi-byte character is incomplete; wait for its next token
            ready = safe_length(text, params.stop) if params.stop else len(text)
            if ready > sent:
                yield text[sent:ready]
                sent = ready
        yield Finished(text[sent:], "length", len(generated))


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (config_eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return frozenset(ids)
