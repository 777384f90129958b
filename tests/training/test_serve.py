"""The CPU model server, for real: a subprocess serving the tiny model, driven by `openai`.

The model is a fresh tiny random Llama from sovereign_training.tiny (the same one the training
tests start from), saved the way training saves models. Its answers are gibberish, so the tests
check what does not depend on quality: the server's greedy text equals transformers' own
greedy generation, streaming equals non-streaming, usage counts equal the tokenizer's counts,
stop sequences cut where they should, and every bad request is an OpenAI-shaped 4xx.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
import torch
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from sovereign_operator.devcluster.processes import free_port
from sovereign_training.modeling import load_tokenizer
from sovereign_training.serve import main
from sovereign_training.serve.app import create_app
from sovereign_training.serve.engine import Engine
from sovereign_training.serve.loading import LoadOptions, ModelLoadError, load_engine
from sovereign_training.serve.state import ModelState
from sovereign_training.tiny import create_tiny_model

pytestmark = pytest.mark.training

NAME = "tiny-eu"
MAX_LEN = 128
PROMPT = "Article 26 GDPR requires"
MESSAGES: list[Any] = [
    {"role": "system", "content": "You explain EU data-protection rules."},
    {"role": "user", "content": "What does Article 26 GDPR require?"},
]
STARTUP_TIMEOUT_S = 120


def wait_healthy(base: str, proc: subprocess.Popen[bytes] | None, log: Path | None) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            output = log.read_text() if log else ""
            pytest.fail(f"server exited with {proc.returncode}:\n{output}")
        try:
            if requests.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.25)
    output = log.read_text() if log else ""
    pytest.fail(f"server not healthy after {STARTUP_TIMEOUT_S} s:\n{output}")


def make_context_sensitive(model_dir: Path) -> None:
    """Redraw the tiny model's layer weights (not its embeddings) at a larger scale.

    At the default initialisation a tiny model's residual stream is dominated by the current
    token's own (tied) embedding, so greedy decoding repeats the last prompt token whatever
    came before, and a server that dropped the KV cache would pass every check. Larger layer
    weights make each next token depend on the whole context.
    """
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2 and "embed" not in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    model.save_pretrained(model_dir)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = create_tiny_model(tmp_path_factory.mktemp("models") / "tiny-chat")
    make_context_sensitive(path)
    return path


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> Any:
    """The same model, run by transformers itself: what the server's answers must equal."""
    return AutoModelForCausalLM.from_pretrained(model_dir)  # from_pretrained returns eval mode


def greedy_ids(reference: Any, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    out = reference.generate(
        torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False
    )
    return [int(t) for t in out[0, len(prompt_ids) :]]


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of `python -m sovereign_training serve` (the runtime command) on a free port."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    cmd = [
        sys.executable, "-m", "sovereign_training", "serve",
        "--model-dir", str(model_dir), "--served-model-name", NAME,
        "--port", str(port), "--max-model-len", str(MAX_LEN),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, log)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to exit by it.
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete" in log.read_text()


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)


def metric_samples(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = requests.get(f"{base}/metrics", timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# --- the happy paths -------------------------------------------------------------------------


def test_health_and_models(server: str, client: openai.OpenAI) -> None:
    health = requests.get(f"{server}/health", timeout=5)
    assert (health.status_code, health.json()) == (200, {"status": "ready", "model": NAME})
    assert [m.id for m in client.models.list()] == [NAME]
    model = client.models.retrieve(NAME)
    assert (model.id, model.owned_by, getattr(model, "max_model_len", None)) == (
        NAME,
        "sovereign-ai",
        MAX_LEN,
    )
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_greedy_completion_equals_transformers_generate(
    client: openai.OpenAI, reference: Any, tokenizer: PreTrainedTokenizerBase
) -> None:
    result = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=8, temperature=0)
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    expected_ids = greedy_ids(reference, prompt_ids, 8)
    assert len(set(expected_ids)) > 2  # the model does not just repeat one token
    expected = tokenizer.decode(expected_ids, skip_special_tokens=True)
    choice = result.choices[0]
    assert choice.text == expected
    assert choice.finish_reason == ("stop" if len(expected_ids) < 8 else "length")
    assert result.model == NAME
    assert result.usage is not None
    assert result.usage.prompt_tokens == len(prompt_ids)
    assert result.usage.completion_tokens == len(expected_ids)
    assert result.usage.total_tokens == len(prompt_ids) + len(expected_ids)


def test_streamed_completion_equals_the_plain_one(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": NAME, "prompt": PROMPT, "max_tokens": 10, "temperature": 0}
    plain = client.completions.create(**kwargs)
    chunks = list(
        client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    )
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len(texts) > 1  # it really streamed, token by token
    assert "".join(texts) == plain.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage == plain.usage


def test_chat_uses_the_tokenizers_template(
    client: openai.OpenAI, tokenizer: PreTrainedTokenizerBase
) -> None:
    result = client.chat.completions.create(
        model=NAME, messages=MESSAGES, max_tokens=6, temperature=0
    )
    rendered = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    expected_prompt = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert result.usage is not None
    assert result.usage.prompt_tokens == len(expected_prompt)
    assert result.usage.completion_tokens == 6
    assert result.choices[0].message.role == "assistant"
    assert result.choices[0].finish_reason == "length"
    assert result.id.startswith("chatcmpl-")
    # The same prompt through /v1/completions must give the same greedy text.
    same = client.completions.create(
        model=NAME, prompt=expected_prompt, max_tokens=6, temperature=0
    )
    assert result.choices[0].message.content == same.choices[0].text


def test_streamed_chat_equals_the_plain_one(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": NAME, "messages": MESSAGES, "max_tokens": 8}
    plain = client.chat.completions.create(**kwargs, temperature=0)
    stream = client.chat.completions.create(
        **kwargs, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage == plain.usage
    assert {c.id for c in chunks} == {chunks[0].id}


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 1e-300},
        {"top_p": 1e-300},
        {"temperature": 2, "top_p": 1, "seed": -5},
        {"stop": ["\n", "x", "ab", "é"], "seed": 2**64 - 1},
    ],
)
def test_extreme_but_valid_sampling_values_are_answered(
    client: openai.OpenAI, fields: dict[str, Any]
) -> None:
    result = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=3, **fields)
    assert result.choices[0].finish_reason in ("stop", "length")


def test_stream_is_server_sent_events_ending_with_done(server: str) -> None:
    body = {"model": NAME, "prompt": PROMPT, "max_tokens": 3, "temperature": 0, "stream": True}
    with requests.post(f"{server}/v1/completions", json=body, stream=True, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line for line in resp.iter_lines(decode_unicode=True) if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def test_seed_makes_sampling_repeatable(client: openai.OpenAI) -> None:
    def sample_text(seed: int) -> str:
        result = client.completions.create(
            model=NAME, prompt=PROMPT, max_tokens=12, temperature=1.0, top_p=0.95, seed=seed
        )
        return result.choices[0].text

    first = sample_text(11)
    assert sample_text(11) == first
    assert any(sample_text(seed) != first for seed in (12, 13, 14))


def test_stop_sequence_ends_the_text_before_it(
    client: openai.OpenAI, reference: Any, tokenizer: PreTrainedTokenizerBase
) -> None:
    generated = greedy_ids(reference, tokenizer(PROMPT)["input_ids"], 12)
    full = str(tokenizer.decode(generated))
    # A two-character stop that straddles a token boundary: its first character arrives one
    # token before its second, so a server that streamed it at once could not take it back.
    stop = ""
    for k in range(2, len(generated)):
        head = str(tokenizer.decode(generated[:k]))
        at = len(head) - 1
        candidate = full[at : at + 2]
        if full.startswith(head) and len(candidate) == 2 and full.index(candidate) == at:
            stop = candidate
            break
    assert stop, f"no token boundary to test in {full!r}"
    expected = full[: full.index(stop)]
    kwargs: dict[str, Any] = {"model": NAME, "prompt": PROMPT, "max_tokens": 12, "temperature": 0}
    cut = client.completions.create(**kwargs, stop=[stop, "never-generated"]).choices[0]
    assert (cut.text, cut.finish_reason) == (expected, "stop")
    streamed = client.completions.create(**kwargs, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == expected


# --- bad requests ----------------------------------------------------------------------------

LONG_PROMPT = "Article 26 GDPR requires joint controllers to agree. " * 40
CMPL = "/v1/completions"
CHAT = "/v1/chat/completions"
TOO_LONG = "context_length_exceeded"


def cmpl(**fields: Any) -> dict[str, Any]:
    return {"model": NAME, "prompt": "x", **fields}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": NAME, "messages": MESSAGES, **fields}


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "code"),
    [
        (CMPL, cmpl(model="gpt-4"), 404, "model", "model_not_found"),
        (CHAT, chat(model="gpt-4"), 404, "model", "model_not_found"),
        (CMPL, cmpl(n=2), 400, "n", "invalid_value"),
        (CHAT, chat(n=3), 400, "n", "invalid_value"),
        (CMPL, cmpl(temperature=-1), 400, "temperature", "invalid_value"),
        (CHAT, chat(temperature=2.5), 400, "temperature", "invalid_value"),
        (CMPL, cmpl(top_p=1.5), 400, "top_p", "invalid_value"),
        (CMPL, cmpl(max_tokens=-3), 400, "max_tokens", "invalid_value"),
        (CMPL, cmpl(seed="abc"), 400, "seed", "invalid_value"),
        (CMPL, cmpl(stop=[""]), 400, "stop", "invalid_value"),
        (CMPL, cmpl(foo=1), 400, "foo", "unknown_parameter"),
        (CMPL, cmpl(prompt=""), 400, "prompt", "invalid_value"),
        (CMPL, cmpl(prompt=[5, 10**9]), 400, "prompt", "invalid_value"),
        (CMPL, {"model": NAME}, 400, "prompt", "missing_required_parameter"),
        (CMPL, cmpl(prompt=LONG_PROMPT), 400, "prompt", TOO_LONG),
        (CMPL, cmpl(max_tokens=10_000), 400, "max_tokens", TOO_LONG),
        (
            CHAT,
            chat(messages=[{"role": "user", "content": LONG_PROMPT}]),
            400,
            "messages",
            TOO_LONG,
        ),
        (CHAT, chat(messages=[]), 400, "messages", "invalid_value"),
        (CHAT, chat(messages="hello"), 400, "messages", "invalid_value"),
        (CHAT, chat(logprobs=True), 400, "logprobs", "invalid_value"),
    ],
)
def test_bad_requests_get_openai_shaped_4xx(
    server: str, path: str, body: Any, status: int, param: str, code: str | None
) -> None:
    resp = requests.post(f"{server}{path}", json=body, timeout=30)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert param in error["message"]
    assert error["code"] == code


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'{"model": "tiny-eu", "prompt": "x",}', "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b"", "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"model=tiny-eu", "application/x-www-form-urlencoded"),
    ],
)
def test_malformed_bodies_get_400(server: str, data: bytes, content_type: str) -> None:
    resp = requests.post(
        f"{server}/v1/completions", data=data, headers={"content-type": content_type}, timeout=10
    )
    assert resp.status_code == 400, resp.text
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}


def test_openai_client_raises_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4", messages=MESSAGES)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model=NAME, prompt="x", n=2)
    assert bad.value.param == "n"
    assert "only n=1" in bad.value.message


def test_unknown_routes_and_methods_are_openai_shaped(server: str) -> None:
    missing = requests.get(f"{server}/v1/engines", timeout=5)
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    wrong = requests.get(f"{server}/v1/completions", timeout=5)
    assert wrong.status_code == 405
    assert "error" in wrong.json()


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_count_requests_tokens_and_latency(server: str, client: openai.OpenAI) -> None:
    before = metric_samples(server)
    result = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=5, temperature=0)
    requests.post(
        f"{server}/v1/completions", json={"model": NAME, "prompt": "x", "n": 2}, timeout=5
    )
    after = metric_samples(server)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    ep = {"endpoint": "/v1/completions"}
    assert delta("sovai_serve_requests_total", status="200", **ep) == 1
    assert delta("sovai_serve_requests_total", status="400", **ep) == 1
    assert result.usage is not None
    assert delta("sovai_serve_tokens_total", kind="prompt", **ep) == result.usage.prompt_tokens
    assert delta("sovai_serve_tokens_total", kind="completion", **ep) == 5
    assert delta("sovai_serve_request_duration_seconds_count", **ep) == 2
    assert delta("sovai_serve_request_duration_seconds_sum", **ep) > 0
    assert sample(after, "sovai_serve_model_loaded") == 1
    # Nothing the tests sent so far was answered with a server error.
    statuses = {dict(k[1]).get("status") for k in after if k[0] == "sovai_serve_requests_total"}
    assert "500" not in statuses


# --- in-process: readiness while loading, the chat fallback, adapters, load failures ----------


@pytest.fixture(scope="module")
def plain_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose tokenizer has no chat template."""
    return create_tiny_model(tmp_path_factory.mktemp("models") / "tiny-plain", chat_template=False)


def test_health_is_503_until_loaded_and_chat_uses_trainings_fallback_template(
    plain_model_dir: Path,
) -> None:
    gate = threading.Event()

    def gated_loader() -> Engine:
        gate.wait(timeout=60)
        return load_engine(LoadOptions(plain_model_dir, max_model_len=MAX_LEN))

    app = create_app("plain", ModelState(gated_loader))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        loading = requests.get(f"{base}/health", timeout=5)
        assert (loading.status_code, loading.json()) == (503, {"status": "loading"})
        early = requests.post(f"{base}/v1/completions", json={"model": "plain", "prompt": "x"})
        assert (early.status_code, early.json()["error"]["code"]) == (503, "model_not_ready")
        gate.set()
        wait_healthy(base, None, None)

        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        result = client.chat.completions.create(
            model="plain", messages=MESSAGES, max_tokens=4, temperature=0
        )
        # No template: the prompt is rendered exactly as training renders chat data.
        training_tokenizer, used_fallback = load_tokenizer(plain_model_dir)
        assert used_fallback
        fallback = training_tokenizer.apply_chat_template(
            MESSAGES, tokenize=False, add_generation_prompt=True
        )
        assert isinstance(fallback, str)
        assert fallback.startswith("### System:\n")
        assert fallback.endswith("### Assistant:\n")
        expected_ids = training_tokenizer(fallback, add_special_tokens=False)["input_ids"]
        assert result.usage is not None
        assert result.usage.prompt_tokens == len(expected_ids)
        same = client.completions.create(
            model="plain", prompt=fallback, max_tokens=4, temperature=0
        )
        assert result.choices[0].message.content == same.choices[0].text
    finally:
        gate.set()
        server.should_exit = True
        thread.join(timeout=30)


def test_a_lora_adapter_folder_is_merged_onto_its_base(model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    peft_model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    torch.manual_seed(5)
    with torch.no_grad():  # LoRA B starts at zero; make the adapter change the outputs
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter_dir))
    assert not (adapter_dir / "config.json").exists()

    engine = load_engine(LoadOptions(adapter_dir))
    ids = torch.tensor([[1, 50, 60, 70, 80]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        got = engine.model(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(model_dir)(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)
    assert engine.tokenizer.chat_template is not None  # taken from the base model's folder
    assert type(engine.model).__name__ == "LlamaForCausalLM"

    # Training records the base by its source URI, which is not a local folder when serving.
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = "pvc://models/base"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"not available locally.*--base-model-dir"):
        load_engine(LoadOptions(adapter_dir))
    fetched = load_engine(LoadOptions(adapter_dir, base_model_dir=model_dir))
    with torch.no_grad():
        assert torch.allclose(fetched.model(input_ids=ids).logits, expected, atol=1e-4)


def test_the_server_exits_1_when_the_model_cannot_load(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--model-dir", str(empty), "--port", str(free_port())]) == 1
