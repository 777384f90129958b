"""Pure pieces of the CPU model server: sampling, stop sequences, request validation, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from sovereign_training.data import FALLBACK_CHAT_TEMPLATE
from sovereign_training.serve.errors import validation_error
from sovereign_training.serve.loading import ModelLoadError, resolve_max_model_len
from sovereign_training.serve.prompts import chat_template
from sovereign_training.serve.protocol import ChatCompletionRequest, CompletionRequest
from sovereign_training.serve.sampling import find_stop, safe_length, select_next_token

pytestmark = pytest.mark.training


def test_temperature_zero_is_argmax() -> None:
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    gen = torch.Generator().manual_seed(0)
    assert [select_next_token(logits, 0.0, 1.0, gen) for _ in range(5)] == [1] * 5


def test_small_top_p_keeps_only_the_most_likely_token() -> None:
    logits = torch.tensor([0.0, 2.0, 1.9, 0.5])
    gen = torch.Generator().manual_seed(1)
    picks = {select_next_token(logits, 1.5, 0.05, gen) for _ in range(50)}
    assert picks == {1}


@pytest.mark.parametrize(("temperature", "top_p"), [(1e-300, 1.0), (1.0, 1e-300), (1e-6, 1e-9)])
def test_extreme_sampling_values_fall_back_to_the_most_likely_token(
    temperature: float, top_p: float
) -> None:
    logits = torch.tensor([0.0, 2.0, 1.9, 0.5])
    gen = torch.Generator().manual_seed(2)
    assert {select_next_token(logits, temperature, top_p, gen) for _ in range(20)} == {1}


def test_sampling_follows_the_distribution_and_the_seed() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2]))

    def draws(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return [select_next_token(logits, 1.0, 1.0, gen) for _ in range(2000)]

    first = draws(3)
    assert first == draws(3)
    share = first.count(0) / len(first)
    assert 0.45 < share < 0.55
    assert set(first) == {0, 1, 2}


@pytest.mark.parametrize(
    ("text", "stops", "start", "expected"),
    [
        ("hello world", ("world",), 0, 6),
        ("hello world", ("o", "wor"), 0, 4),
        ("hello world", ("o",), 5, 7),
        ("hello world", ("xyz",), 0, None),
        ("hello", (), 0, None),
    ],
)
def test_find_stop(text: str, stops: tuple[str, ...], start: int, expected: int | None) -> None:
    assert find_stop(text, stops, start) == expected


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("hello wo", ("world",), 6),  # "wo" may begin "world": hold it back
        ("hello w", ("world", "xw"), 6),
        ("hello", ("world",), 5),
        ("abcab", ("abcabd",), 0),  # the whole text may still become the stop
        ("ab", ("b", "bc"), 1),
    ],
)
def test_safe_length_holds_back_a_possible_stop_prefix(
    text: str, stops: tuple[str, ...], expected: int
) -> None:
    assert safe_length(text, stops) == expected


class _Tokenizer:
    def __init__(self, template: str | None) -> None:
        self.chat_template = template


@pytest.mark.parametrize(
    ("own", "override", "expected"),
    [
        ("{{ own }}", None, "{{ own }}"),
        ("{{ own }}", "{{ override }}", "{{ override }}"),
        (None, None, FALLBACK_CHAT_TEMPLATE),  # the one training uses and saves
        (None, "{{ override }}", "{{ override }}"),
    ],
)
def test_chat_template_choice(own: str | None, override: str | None, expected: str) -> None:
    assert chat_template(_Tokenizer(own), override) == expected


def _openai_error(model: type[CompletionRequest | ChatCompletionRequest], body: Any) -> Any:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    errors = [{**e, "loc": ("body", *e["loc"])} for e in info.value.errors()]
    return validation_error(RequestValidationError(errors))


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"model": "m", "prompt": "x", "n": 2}, "n", "only n=1"),
        ({"model": "m", "prompt": "x", "temperature": -1}, "temperature", "greater than"),
        ({"model": "m", "prompt": "x", "top_p": 0}, "top_p", "greater than"),
        ({"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens", "greater than"),
        ({"model": "m", "prompt": "x", "max_tokens": "many"}, "max_tokens", "integer"),
        ({"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"model": "m", "prompt": ["a", "b"]}, "prompt", "only one prompt"),
        ({"model": "m", "prompt": "x", "echo": True}, "echo", "not supported"),
        ({"model": "m", "prompt": "x", "bogus": 1}, "bogus", "Unrecognized"),
        ({"prompt": "x"}, "model", "required"),
    ],
)
def test_completion_request_errors_name_the_field(body: Any, param: str, needle: str) -> None:
    err = _openai_error(CompletionRequest, body)
    assert (err.status_code, err.param) == (400, param)
    assert needle in err.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": [{"type": "image_url", "url": "x"}]}],
            },
            "messages[0].content[0].type",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"a": 1}]},
            "tools",
        ),
    ],
)
def test_chat_request_errors_name_the_field(body: Any, param: str) -> None:
    err = _openai_error(ChatCompletionRequest, body)
    assert (err.status_code, err.param) == (400, param)


def test_completion_prompt_forms_unwrap_to_one_prompt() -> None:
    assert CompletionRequest(model="m", prompt="hi").single_prompt() == "hi"
    assert CompletionRequest(model="m", prompt=["hi"]).single_prompt() == "hi"
    assert CompletionRequest(model="m", prompt=[1, 2]).single_prompt() == [1, 2]
    assert CompletionRequest(model="m", prompt=[[1, 2]]).single_prompt() == [1, 2]


class _Config:
    max_position_embeddings = 512


def test_max_model_len_defaults_to_the_model_and_cannot_exceed_it() -> None:
    assert resolve_max_model_len(_Config(), None) == 512
    assert resolve_max_model_len(_Config(), 128) == 128
    with pytest.raises(ModelLoadError, match="exceeds the model's context length 512"):
        resolve_max_model_len(_Config(), 1024)
    with pytest.raises(ModelLoadError, match="pass --max-model-len"):
        resolve_max_model_len(object(), None)


def test_a_rule_across_fields_is_a_400_without_a_param() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 5,
        "max_completion_tokens": 6,
    }
    err = _openai_error(ChatCompletionRequest, body)
    assert (err.status_code, err.param, err.code) == (400, None, "invalid_value")
    assert err.message == "max_tokens and max_completion_tokens disagree; send one"


def test_unsupported_fields_say_how_to_send_them() -> None:
    err = _openai_error(CompletionRequest, {"model": "m", "prompt": "x", "logit_bias": {"5": 1}})
    assert (
        err.message == "logit_bias: logit_bias is not supported by this server; send {} or omit it"
    )
