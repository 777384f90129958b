"""A tiny, randomly initialised Llama model, and a byte-level BPE tokenizer trained on sample data.

Tests and the local demo use these instead of downloading anything: the tokenizer is trained on
the project's sample chat dataset, and the model has the Llama architecture at a toy size, so the
real loading, training, saving and serving code paths run unchanged on a CPU in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|im_end|>"  # ends every turn, so generation stops after the assistant's answer
PAD_TOKEN = "<|pad|>"
TURN_START = "<|im_start|>"
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, TURN_START, EOS_TOKEN]

# ChatML-style template: prefix-stable (rendering n messages is a prefix of rendering n+1), which
# the loss masking in data.py relies on to find each assistant turn's tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def sample_dataset_path() -> Path:
    """The sample chat dataset in a source checkout (examples/data/)."""
    repo_root = Path(__file__).resolve().parents[2]
    path = repo_root / "examples" / "data" / "eu-data-protection-chat.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"sample dataset not found at {path}; pass the dataset path explicitly"
        )
    return path


def texts_from_jsonl(path: Path) -> Iterator[str]:
    """Every piece of text in a chat, instruct or text JSONL file, for tokenizer training."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row: dict[str, Any] = json.loads(line)
            for message in row.get("messages", []):
                yield f"{message['role']}\n{message['content']}"
            for key in ("prompt", "completion", "text"):
                if isinstance(row.get(key), str):
                    yield row[key]


def train_tokenizer(
    texts: Iterable[str], *, vocab_size: int = 1024, chat_template: bool = True
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer; with `chat_template`, set the ChatML template on it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    make_tokenizer: Any = PreTrainedTokenizerFast  # untyped in transformers
    fast: PreTrainedTokenizerFast = make_tokenizer(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[TURN_START],
        model_max_length=4096,
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def create_tiny_model(
    dest: str | Path,
    *,
    dataset: str | Path | None = None,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 1024,
    chat_template: bool = True,
    seed: int = 0,
) -> Path:
    """Train a tokenizer on `dataset` (default: the sample chat data), create a randomly
    initialised LlamaForCausalLM sized to it, and save both with save_pretrained into `dest`.

    Deterministic for a given seed and dataset. Returns `dest`.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    source = Path(dataset) if dataset is not None else sample_dataset_path()
    tokenizer = train_tokenizer(
        texts_from_jsonl(source), vocab_size=vocab_size, chat_template=chat_template
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    make_generation_config: Any = GenerationConfig  # untyped in transformers
    model.generation_config = make_generation_config(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
