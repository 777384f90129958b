"""Turning chat messages into prompt tokens exactly as training turns them into training data.

The template is the tokenizer's, else ``--chat-template``'s override, else training's fallback
(``sovereign_training.data.FALLBACK_CHAT_TEMPLATE``), which training also saves into every
model it fine-tunes from a tokenizer that had none. Tokenization follows training's
``encode_conversation``: no special tokens added to the rendered text, then BOS in front when
the tokenizer normally adds one and the template did not write it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jinja2 import TemplateError

from sovereign_training.data import FALLBACK_CHAT_TEMPLATE
from sovereign_training.serve.errors import OpenAIError
from sovereign_training.serve.protocol import ChatMessage


def chat_template(tokenizer: Any, override: str | None) -> str:
    """The template used for ``tokenizer``: the override, its own, or training's fallback."""
    own = getattr(tokenizer, "chat_template", None)
    return override or (own if isinstance(own, str) and own else FALLBACK_CHAT_TEMPLATE)


def render_chat(tokenizer: Any, messages: Sequence[ChatMessage], template: str) -> str:
    """The prompt text for ``messages``, ending where the assistant's reply begins."""
    conversation = [{"role": m.role, "content": m.text()} for m in messages]
    try:
        text = tokenizer.apply_chat_template(
            conversation, chat_template=template, tokenize=False, add_generation_prompt=True
        )
    except TemplateError as exc:
        # Templates reject some conversations on purpose (e.g. roles that do not alternate).
        raise OpenAIError(
            400, f"messages: the chat template rejected them: {exc}", param="messages"
        ) from exc
    return str(text)


def chat_prompt_ids(
    tokenizer: Any, messages: Sequence[ChatMessage], override: str | None
) -> list[int]:
    """Token ids of the chat prompt for ``messages``."""
    text = render_chat(tokenizer, messages, chat_template(tokenizer, override))
    ids = [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    bos = tokenizer.bos_token_id
    if bos is not None and ids[:1] != [bos] and _adds_bos(tokenizer):
        ids.insert(0, int(bos))
    return ids


def _adds_bos(tokenizer: Any) -> bool:
    bos = tokenizer.bos_token_id
    return bool(tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos])
