"""The operator's API client against a real local HTTPS server that checks client
certificates and bearer tokens the way kube-apiserver does."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sovereign_operator.devcluster.pki import CertificateAuthority
from sovereign_operator.k8s.client import CONFIGMAP, ApiError, Kube
from sovereign_operator.k8s.credentials import Credentials, StaticToken, TokenFile
from sovereign_operator.k8s.ensure import ensure
from sovereign_operator.kopf_tuning import login_with_bounded_pool


@dataclass
class FakeApiServer:
    """Objects in a dict, keyed by path; answers like the API server for what the client uses."""

    url: str
    tokens: set[str] = field(default_factory=set)  # empty: any client certificate will do
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)
    client_names: set[str] = field(default_factory=set)  # common names of client certificates


def _handler(api: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _status(self, code: int, reason: str, message: str) -> None:
            self._answer(code, {"kind": "Status", "reason": reason, "message": message})

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body: Any = json.loads(self.rfile.read(length)) if length else None
            path, _, query = self.path.partition("?")
            api.seen.append((self.command, self.path, self.headers.get("Content-Type"), query))
            peer = self.connection.getpeercert()
            for rdn in (peer or {}).get("subject", ()):
                api.client_names.update(value for key, value in rdn if key == "commonName")
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if api.tokens and token not in api.tokens:
                self._status(401, "Unauthorized", "Unauthorized")
            elif self.command == "GET" and path in api.objects:
                self._answer(200, api.objects[path])
            elif self.command == "GET" and path.endswith("/configmaps"):
                items = [obj for key, obj in api.objects.items() if key.startswith(path + "/")]
                self._answer(200, {"items": items})
            elif self.command == "POST":
                key = f"{path}/{body['metadata']['name']}"
                if key in api.objects:
                    self._status(409, "AlreadyExists", f'"{body["metadata"]["name"]}" exists')
                    return
                api.objects[key] = body
                self._answer(201, body)
            elif self.command == "PATCH" and path in api.objects:
                for section, value in body.items():
                    api.objects[path].setdefault(section, {}).update(value)
                self._answer(200, api.objects[path])
            elif self.command == "DELETE" and path in api.objects:
                self._answer(200, api.objects.pop(path))
            else:
                self._status(404, "NotFound", f"{path} not found")

        do_GET = do_POST = do_PATCH = do_DELETE = _handle

    return Handler


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CertificateAuthority]:
    folder = tmp_path_factory.mktemp("pki")
    return folder, CertificateAuthority(folder)


@pytest.fixture
def api(pki: tuple[Path, CertificateAuthority]) -> Iterator[FakeApiServer]:
    _, ca = pki
    serving = ca.issue("apiserver", "apiserver", server_hosts=["127.0.0.1", "localhost"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.pair.cert))
    context.load_cert_chain(str(serving.cert), str(serving.key))
    context.verify_mode = ssl.CERT_OPTIONAL  # a client certificate, or a bearer token
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state = FakeApiServer(url=f"https://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def client_cert_credentials(api: FakeApiServer, ca: CertificateAuthority) -> Credentials:
    me = ca.issue("operator", "system:serviceaccount:sovai:operator")
    return Credentials(
        server=api.url,
        ca_pem=ca.pair.cert.read_text(),
        cert_pem=me.cert.read_text(),
        key_file=str(me.key),
    )


def test_crud_and_ensure_over_mutual_tls(
    api: FakeApiServer, pki: tuple[Path, CertificateAuthority]
) -> None:
    kube = Kube(client_cert_credentials(api, pki[1]), pool_size=2)
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "ml", "labels": {"a": "1"}},
        "data": {"k": "v"},
    }
    assert ensure(kube, manifest).action == "created"
    assert ensure(kube, manifest).action == "unchanged"  # 409, then get: nothing drifted
    drifted = {**manifest, "data": {"k": "changed"}}
    patched = ensure(kube, drifted)
    assert (patched.action, patched.obj["data"]) == ("patched", {"k": "changed"})
    assert api.seen[-1][2] == "application/merge-patch+json"

    assert [item["metadata"]["name"] for item in kube.list(CONFIGMAP, "ml", "a=1,b in (x y)")] == [
        "cfg"
    ]
    assert api.seen[-1][3] == "labelSelector=a%3D1%2Cb+in+%28x+y%29"
    assert kube.delete(CONFIGMAP, "ml", "cfg") is True
    assert kube.delete(CONFIGMAP, "ml", "cfg") is False
    assert kube.get_or_none(CONFIGMAP, "ml", "cfg") is None
    assert api.client_names == {"system:serviceaccount:sovai:operator"}


def test_errors_carry_the_servers_message(
    api: FakeApiServer, pki: tuple[Path, CertificateAuthority]
) -> None:
    kube = Kube(client_cert_credentials(api, pki[1]), pool_size=1)
    with pytest.raises(ApiError) as raised:
        kube.get(CONFIGMAP, "ml", "absent")
    assert raised.value.status == 404
    assert str(raised.value) == "404 Not Found: /api/v1/namespaces/ml/configmaps/absent not found"


def test_untrusted_server_is_refused(
    api: FakeApiServer, tmp_path: Path, pki: tuple[Path, CertificateAuthority]
) -> None:
    stranger = CertificateAuthority(tmp_path)  # not the CA that signed the server
    kube = Kube(Credentials(server=api.url, ca_file=str(stranger.pair.cert)), pool_size=1)
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        kube.get(CONFIGMAP, "ml", "x")
    insecure = Kube(Credentials(server=api.url, insecure=True), pool_size=1)
    assert insecure.get_or_none(CONFIGMAP, "ml", "x") is None


def test_rotated_token_is_read_again_after_401(
    api: FakeApiServer, tmp_path: Path, pki: tuple[Path, CertificateAuthority]
) -> None:
    _, ca = pki
    token_file = tmp_path / "token"
    token_file.write_text("old")
    api.tokens = {"old"}
    kube = Kube(
        Credentials(server=api.url, ca_file=str(ca.pair.cert), token=TokenFile(token_file)),
        pool_size=1,
    )
    assert kube.get_or_none(CONFIGMAP, "ml", "x") is None
    # The kubelet rotates the token. Here its mtime stays the same, so only the server's 401
    # can tell the client to read the file again.
    stamp = token_file.stat().st_mtime_ns
    token_file.write_text("new")
    os.utime(token_file, ns=(stamp, stamp))
    api.tokens = {"new"}
    before = len(api.seen)
    assert kube.get_or_none(CONFIGMAP, "ml", "x") is None
    assert len(api.seen) - before == 2  # the 401, then the retry with the new token
    api.tokens = {"neither"}
    with pytest.raises(ApiError, match="401"):
        kube.get(CONFIGMAP, "ml", "x")


def test_kopf_session_uses_the_same_credentials(
    api: FakeApiServer, pki: tuple[Path, CertificateAuthority]
) -> None:
    _, ca = pki
    api.tokens = {"s3cret"}
    credentials = Credentials(
        server=api.url, ca_file=str(ca.pair.cert), token=StaticToken("s3cret"), namespace="ml"
    )

    async def login_and_get() -> tuple[int, str | None]:
        session = login_with_bounded_pool(credentials, namespaces=1, trust_env=False)
        try:
            async with session.aiohttp_session.get(
                f"{session.server}/api/v1/namespaces/ml/configmaps/x"
            ) as response:
                return response.status, session.default_namespace
        finally:
            await session.aiohttp_session.close()

    assert asyncio.run(login_and_get()) == (404, "ml")  # authenticated and trusted; absent
