"""The API client waits out a 429 after its Retry-After, for reads and writes alike (the API
server refused those before acting), and retries nothing else that reached the server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes.client import Configuration

from sovereign_operator.k8s.client import CONFIGMAP, ApiError, ApiUnavailable, Kube

CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "a"}}


class Server(ThreadingHTTPServer):
    """Answers with the statuses queued in ``answers``, then 200 with an empty list."""

    def __init__(self, answers: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.answers = answers
        self.requests: list[str] = []


class Handler(BaseHTTPRequestHandler):
    server: Server

    def _answer(self) -> None:
        self.server.requests.append(self.command)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        status = self.server.answers.pop(0) if self.server.answers else 200
        body = json.dumps({"kind": "Status", "items": [], "metadata": {}}).encode()
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PATCH = _answer

    def log_message(self, *args: object) -> None:
        pass


def serving(answers: list[int]) -> Iterator[tuple[Server, Kube]]:
    server = Server(answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"http://127.0.0.1:{server.server_port}"
        yield server, Kube(lambda: Configuration(host=address), 1)
    finally:
        server.shutdown()


@pytest.fixture
def throttled() -> Iterator[tuple[Server, Kube]]:
    yield from serving([429, 429])


@pytest.fixture
def failing() -> Iterator[tuple[Server, Kube]]:
    yield from serving([500])


def test_a_read_waits_out_429s(throttled: tuple[Server, Kube]) -> None:
    server, kube = throttled
    assert kube.list(CONFIGMAP, "team-a") == []
    assert server.requests == ["GET", "GET", "GET"]


def test_a_write_waits_out_429s(throttled: tuple[Server, Kube]) -> None:
    server, kube = throttled
    kube.apply(CONFIG_MAP)
    assert server.requests == ["PATCH", "PATCH", "PATCH"]


def test_another_error_is_not_retried(failing: tuple[Server, Kube]) -> None:
    server, kube = failing
    with pytest.raises(ApiError) as refused:
        kube.apply(CONFIG_MAP)
    assert refused.value.status == 500
    assert server.requests == ["PATCH"]


def test_an_unreachable_server_is_the_clients_own_error() -> None:
    kube = Kube(lambda: Configuration(host="http://127.0.0.1:9"), 1)
    with pytest.raises(ApiUnavailable, match="GET /api/v1/namespaces/a/configmaps"):
        kube.list(CONFIGMAP, "a")
