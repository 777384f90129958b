"""The FastAPI application: OpenAI-compatible routes over one Engine."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sovereign_training.serve.engine import Engine, Finished, SamplingParams
from sovereign_training.serve.errors import OpenAIError, error_body, install_error_handlers
from sovereign_training.serve.metrics import MetricsMiddleware, ServeMetrics
from sovereign_training.serve.prompts import chat_prompt_ids
from sovereign_training.serve.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    Usage,
)
from sovereign_training.serve.state import ModelState

log = logging.getLogger(__name__)

# OpenAI's default max_tokens for the legacy completions endpoint.
DEFAULT_COMPLETION_MAX_TOKENS = 16
_COMPLETIONS = "/v1/completions"
_CHAT = "/v1/chat/completions"
_SSE_DONE = "data: [DONE]\n\n"


def create_app(
    served_model_name: str,
    state: ModelState,
    *,
    chat_template: str | None = None,
    on_load_failure: Callable[[BaseException], None] = lambda _: None,
) -> FastAPI:
    """Build the app. Loading starts in the background when the app starts (lifespan)."""
    metrics = ServeMetrics()
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        def failed(exc: BaseException) -> None:
            metrics.model_loaded.set(0)
            on_load_failure(exc)

        state.start(failed)
        yield

    app = FastAPI(title="Sovereign AI CPU model server", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    def ready_engine(model: str) -> Engine:
        if model != served_model_name:
            raise OpenAIError(
                404,
                f"The model `{model}` does not exist. This server serves `{served_model_name}`.",
                param="model",
                code="model_not_found",
            )
        if state.engine is None:
            raise OpenAIError(
                503,
                "the model is not loaded yet; retry when /health answers 200",
                type_="service_unavailable",
                code="model_not_ready",
            )
        return state.engine

    def card(engine: Engine) -> ModelCard:
        return ModelCard(id=served_model_name, created=created, max_model_len=engine.max_model_len)

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.engine is not None:
            metrics.model_loaded.set(1)
            return JSONResponse({"status": "ready", "model": served_model_name})
        if state.error is not None:
            return JSONResponse({"status": "failed", "error": state.error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        metrics.model_loaded.set(1 if state.engine is not None else 0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models() -> ModelList:
        return ModelList(data=[card(ready_engine(served_model_name))])

    @app.get("/v1/models/{model}")
    async def get_model(model: str) -> ModelCard:
        return card(ready_engine(model))

    @app.post(_COMPLETIONS, response_model=None)
    async def completions(body: CompletionRequest) -> CompletionResponse | StreamingResponse:
        engine = ready_engine(body.model)
        prompt_ids = completion_prompt_ids(engine, body)
        params = sampling_params(
            body, engine, len(prompt_ids), body.max_tokens, DEFAULT_COMPLETION_MAX_TOKENS, "prompt"
        )
        metrics.count_tokens(_COMPLETIONS, "prompt", len(prompt_ids))
        request_id = f"cmpl-{uuid.uuid4().hex}"
        now = int(time.time())
        events = run_generation(engine, prompt_ids, params)
        if body.stream:
            chunks = completion_chunks(request_id, now, events, len(prompt_ids), body)
            return sse_response(chunks)
        text, finished = await collect(events)
        metrics.count_tokens(_COMPLETIONS, "completion", finished.completion_tokens)
        return CompletionResponse(
            id=request_id,
            created=now,
            model=served_model_name,
            choices=[CompletionChoice(text=text, finish_reason=finished.finish_reason)],
            usage=usage(len(prompt_ids), finished.completion_tokens),
        )

    @app.post(_CHAT, response_model=None)
    async def chat_completions(
        body: ChatCompletionRequest,
    ) -> ChatCompletionResponse | StreamingResponse:
        engine = ready_engine(body.model)
        prompt_ids = chat_prompt_ids(engine.tokenizer, body.messages, chat_template)
        params = sampling_params(
            body, engine, len(prompt_ids), body.token_limit(), None, "messages"
        )
        metrics.count_tokens(_CHAT, "prompt", len(prompt_ids))
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        now = int(time.time())
        events = run_generation(engine, prompt_ids, params)
        if body.stream:
            return sse_response(chat_chunks(request_id, now, events, len(prompt_ids), body))
        text, finished = await collect(events)
        metrics.count_tokens(_CHAT, "completion", finished.completion_tokens)
        return ChatCompletionResponse(
            id=request_id,
            created=now,
            model=served_model_name,
            choices=[
                ChatChoice(
                    message=AssistantMessage(content=text), finish_reason=finished.finish_reason
                )
            ],
            usage=usage(len(prompt_ids), finished.completion_tokens),
        )

    def envelope(kind: str, request_id: str, now: int, choices: list[Any]) -> dict[str, Any]:
        return {
            "id": request_id,
            "object": kind,
            "created": now,
            "model": served_model_name,
            "choices": choices,
        }

    async def completion_chunks(
        request_id: str,
        now: int,
        events: AsyncIterator[str | Finished],
        prompt_tokens: int,
        body: CompletionRequest,
    ) -> AsyncIterator[dict[str, Any]]:
        def chunk(text: str, finish: str | None) -> dict[str, Any]:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            return envelope("text_completion", request_id, now, [choice])

        async for event in events:
            if isinstance(event, str):
                yield chunk(event, None)
                continue
            metrics.count_tokens(_COMPLETIONS, "completion", event.completion_tokens)
            yield chunk(event.text, event.finish_reason)
            if body.wants_usage_chunk():
                yield usage_chunk("text_completion", request_id, now, prompt_tokens, event)

    async def chat_chunks(
        request_id: str,
        now: int,
        events: AsyncIterator[str | Finished],
        prompt_tokens: int,
        body: ChatCompletionRequest,
    ) -> AsyncIterator[dict[str, Any]]:
        def chunk(delta: dict[str, str], finish: str | None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return envelope("chat.completion.chunk", request_id, now, [choice])

        yield chunk({"role": "assistant", "content": ""}, None)
        async for event in events:
            if isinstance(event, str):
                yield chunk({"content": event}, None)
                continue
            metrics.count_tokens(_CHAT, "completion", event.completion_tokens)
            if event.text:
                yield chunk({"content": event.text}, None)
            yield chunk({}, event.finish_reason)
            if body.wants_usage_chunk():
                yield usage_chunk("chat.completion.chunk", request_id, now, prompt_tokens, event)

    def usage_chunk(
        kind: str, request_id: str, now: int, prompt_tokens: int, finished: Finished
    ) -> dict[str, Any]:
        """The extra last chunk that stream_options.include_usage asks for: no choices."""
        final = envelope(kind, request_id, now, [])
        final["usage"] = usage(prompt_tokens, finished.completion_tokens).model_dump()
        return final

    return app


def completion_prompt_ids(engine: Engine, body: CompletionRequest) -> list[int]:
    prompt = body.single_prompt()
    if isinstance(prompt, str):
        ids = engine.encode(prompt, add_special_tokens=True)
    else:
        vocab = engine.vocab_size()
        bad = next((t for t in prompt if not 0 <= t < vocab), None)
        if bad is not None:
            raise OpenAIError(
                400,
                f"prompt: token id {bad} is outside the vocabulary [0, {vocab})",
                param="prompt",
                code="invalid_value",
            )
        ids = list(prompt)
    if not ids:
        raise OpenAIError(
            400, "prompt: must encode to at least one token", param="prompt", code="invalid_value"
        )
    return ids


def sampling_params(
    body: CompletionRequest | ChatCompletionRequest,
    engine: Engine,
    prompt_tokens: int,
    requested: int | None,
    default: int | None,
    prompt_param: Literal["prompt", "messages"],
) -> SamplingParams:
    """Resolve the request's sampling fields, enforcing prompt + max_tokens <= max model length."""
    limit = engine.max_model_len
    available = limit - prompt_tokens
    if requested is None:
        if available < 1:
            raise context_error(limit, prompt_tokens, 1, prompt_param, prompt_param)
        max_tokens = available if default is None else min(default, available)
    elif requested > available:
        param = "max_tokens" if available >= 1 else prompt_param
        raise context_error(limit, prompt_tokens, requested, prompt_param, param)
    else:
        max_tokens = requested
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        stop=body.stop_sequences(),
        seed=body.seed,
    )


def context_error(
    limit: int, prompt_tokens: int, completion: int, where: str, param: str
) -> OpenAIError:
    return OpenAIError(
        400,
        f"This model's maximum context length is {limit} tokens. However, you requested "
        f"{prompt_tokens + completion} tokens ({prompt_tokens} in the {where}, {completion} in "
        f"the completion). Please reduce the length of the {where} or max_tokens.",
        param=param,
        code="context_length_exceeded",
    )


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


async def run_generation(
    engine: Engine, prompt_ids: list[int], params: SamplingParams
) -> AsyncIterator[str | Finished]:
    """Run the engine in a worker thread and hand its events to the event loop as they come.

    The event loop never waits on the model. If the consumer stops early (the client
    disconnected), the worker is told to stop at its next token and releases the engine.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | Finished | BaseException | None] = asyncio.Queue()
    cancel = threading.Event()

    def put(item: str | Finished | BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:
            cancel.set()  # the loop is closed: the server is shutting down

    def produce() -> None:
        try:
            for event in engine.generate(prompt_ids, params, cancel):
                put(event)
        except BaseException as exc:
            put(exc)
        else:
            put(None)

    threading.Thread(target=produce, name="sovai-generate", daemon=True).start()
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()


async def collect(events: AsyncIterator[str | Finished]) -> tuple[str, Finished]:
    """The whole completion text and the final event of a non-streaming request."""
    parts: list[str] = []
    finished: Finished | None = None
    async for event in events:
        if isinstance(event, Finished):
            parts.append(event.text)
            finished = event
        else:
            parts.append(event)
    if finished is None:
        raise RuntimeError("generation ended without a Finished event")
    return "".join(parts), finished


def sse_response(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    return StreamingResponse(sse_lines(chunks), media_type="text/event-stream")


async def sse_lines(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's format, ending with ``data: [DONE]``.

    Errors after the response has started cannot change its status any more; like OpenAI, send
    them as an ``error`` event, which the openai client raises as an APIError.
    """
    try:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
    except Exception:
        log.exception("generation failed mid-stream")
        body = error_body("internal server error during generation", "server_error", None, None)
        yield f"data: {json.dumps(body)}\n\n"
    yield _SSE_DONE
