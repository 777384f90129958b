"""Prometheus metrics of the server, and the ASGI middleware that records requests."""

from __future__ import annotations

import time
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Endpoint labels are drawn from this fixed set, so a scan of random paths cannot grow the
# number of time series.
_ENDPOINTS = ("/v1/models", "/v1/completions", "/v1/chat/completions", "/health", "/metrics")
# Generation on CPU takes seconds to minutes; the defaults stop at 10 s.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)

TokenKind = Literal["prompt", "completion"]


def endpoint_label(path: str) -> str:
    if path in _ENDPOINTS:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{model}"
    return "other"


class ServeMetrics:
    """The server's metrics, in a registry of their own (one per app, so tests can make many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sovai_serve_requests",
            "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sovai_serve_request_duration_seconds",
            "Time from request to the last byte of the response (whole stream included).",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "sovai_serve_tokens",
            "Tokens processed: prompt tokens read and completion tokens generated.",
            ["endpoint", "kind"],
            registry=self.registry,
        )
        self.model_loaded = Gauge(
            "sovai_serve_model_loaded",
            "1 once the model is loaded and requests are served.",
            registry=self.registry,
        )

    def count_tokens(self, endpoint: str, kind: TokenKind, count: int) -> None:
        self.tokens.labels(endpoint=endpoint, kind=kind).inc(count)


class MetricsMiddleware:
    """Counts every HTTP request by endpoint and status, and times it to its last byte.

    A plain ASGI middleware rather than ``@app.middleware("http")``, because the latter ends
    its timing when a streamed response starts, not when it ends.
    """

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            endpoint = endpoint_label(str(scope.get("path", "")))
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            self.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - started)
