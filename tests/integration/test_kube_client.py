"""The operator's API client and Kopf's session against the real kube-apiserver: mutual TLS
with the admin certificate, ServiceAccount tokens, a revoked token read again after a 401."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.pki import CertificateAuthority
from sovereign_operator.k8s.client import CONFIGMAP, ApiError, Kube
from sovereign_operator.k8s.credentials import (
    Credentials,
    StaticToken,
    TokenFile,
    kubeconfig_credentials,
)
from sovereign_operator.k8s.ensure import ensure
from sovereign_operator.kopf_tuning import login_with_bounded_pool

pytestmark = pytest.mark.integration


def admin(cluster: LocalCluster) -> Credentials:
    return kubeconfig_credentials([cluster.kubeconfig])


def reader_token(cluster: LocalCluster, namespace: str, secret: str | None = None) -> str:
    """A token of a ServiceAccount that may read ConfigMaps in ``namespace``; bound to
    ``secret`` when one is named, so that deleting the Secret revokes it."""
    bound = ["--bound-object-kind=Secret", f"--bound-object-name={secret}"] if secret else []
    return str(cluster.kubectl("create", "token", "reader", "-n", namespace, *bound).stdout.strip())


@pytest.fixture
def reader(cluster: LocalCluster, namespace: str) -> str:
    cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    cluster.kubectl(
        "create", "role", "read", "--verb=get,list", "--resource=configmaps", "-n", namespace
    )
    cluster.kubectl(
        "create", "rolebinding", "read", "--role=read", f"--serviceaccount={namespace}:reader",
        "-n", namespace,
    )  # fmt: skip
    return namespace


def test_crud_and_ensure_over_mutual_tls(cluster: LocalCluster, namespace: str) -> None:
    credentials = admin(cluster)
    kube = Kube(credentials, pool_size=2)
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": namespace, "labels": {"a": "1"}},
        "data": {"k": "v"},
    }
    assert ensure(kube, manifest).action == "created"
    assert ensure(kube, manifest).action == "unchanged"  # 409, then get: nothing drifted
    drifted = {**manifest, "data": {"k": "changed"}}
    patched = ensure(kube, drifted)
    assert (patched.action, patched.obj["data"]) == ("patched", {"k": "changed"})

    selected = kube.list(CONFIGMAP, namespace, "a=1,b notin (x,y)")
    assert [item["metadata"]["name"] for item in selected] == ["cfg"]
    assert kube.delete(CONFIGMAP, namespace, "cfg") is True
    assert kube.delete(CONFIGMAP, namespace, "cfg") is False
    assert kube.get_or_none(CONFIGMAP, namespace, "cfg") is None

    # The client certificate is what the server authorised: without it, anonymous is refused.
    anonymous = Kube(Credentials(server=credentials.server, ca_file=credentials.ca_file), 1)
    with pytest.raises(ApiError) as raised:
        anonymous.get_or_none(CONFIGMAP, namespace, "cfg")
    assert raised.value.status == 403


def test_errors_carry_the_servers_message(cluster: LocalCluster, namespace: str) -> None:
    kube = Kube(admin(cluster), pool_size=1)
    with pytest.raises(ApiError) as raised:
        kube.get(CONFIGMAP, namespace, "absent")
    assert raised.value.status == 404
    assert str(raised.value) == '404 Not Found: configmaps "absent" not found'


def test_untrusted_server_is_refused(cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    credentials = admin(cluster)
    stranger = CertificateAuthority(tmp_path)  # not the CA that signed the server
    untrusting = Kube(Credentials(server=credentials.server, ca_file=str(stranger.pair.cert)), 1)
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.get(CONFIGMAP, namespace, "x")
    insecure = Kube(
        Credentials(
            server=credentials.server,
            insecure=True,
            cert_file=credentials.cert_file,
            key_file=credentials.key_file,
        ),
        pool_size=1,
    )
    assert insecure.get_or_none(CONFIGMAP, namespace, "x") is None


def test_revoked_token_is_read_again_after_401(
    cluster: LocalCluster, reader: str, tmp_path: Path
) -> None:
    namespace = reader
    cluster.kubectl("create", "secret", "generic", "first", "-n", namespace)
    token_file = tmp_path / "token"
    token_file.write_text(reader_token(cluster, namespace, "first"))
    server, ca_file = admin(cluster).server, admin(cluster).ca_file
    kube = Kube(Credentials(server=server, ca_file=ca_file, token=TokenFile(token_file)), 1)
    assert kube.get_or_none(CONFIGMAP, namespace, "x") is None

    # The token is rotated. Its mtime stays the same here, so only the server's 401 can tell
    # the client to read the file again; then the old token is revoked.
    old = StaticToken(token_file.read_text())
    stamp = token_file.stat().st_mtime_ns
    token_file.write_text(reader_token(cluster, namespace))
    os.utime(token_file, ns=(stamp, stamp))
    cluster.kubectl("delete", "secret", "first", "-n", namespace)
    with_old = Kube(Credentials(server=server, ca_file=ca_file, token=old), 1)

    def revoked() -> bool:
        try:
            with_old.get_or_none(CONFIGMAP, namespace, "x")
        except ApiError as error:
            return error.status == 401
        return False

    deadline = time.monotonic() + 60  # the API server caches a token's review for 10 s
    while not revoked():
        assert time.monotonic() < deadline, "the revoked token is still accepted"
        time.sleep(1)

    assert kube.get_or_none(CONFIGMAP, namespace, "x") is None  # the 401, then the new token
    token_file.write_text("not-a-token")
    with pytest.raises(ApiError, match="401"):
        kube.get(CONFIGMAP, namespace, "x")


def test_kopf_session_uses_the_same_credentials(cluster: LocalCluster, reader: str) -> None:
    namespace = reader
    credentials = Credentials(
        server=admin(cluster).server,
        ca_file=admin(cluster).ca_file,
        token=StaticToken(reader_token(cluster, namespace)),
        namespace=namespace,
    )

    async def login_and_get() -> tuple[int, str | None]:
        session = login_with_bounded_pool(credentials, namespaces=1, trust_env=False)
        try:
            async with session.aiohttp_session.get(
                f"{session.server}/api/v1/namespaces/{namespace}/configmaps/x"
            ) as response:
                return response.status, session.default_namespace
        finally:
            await session.aiohttp_session.close()

    assert asyncio.run(login_and_get()) == (404, namespace)  # authenticated and trusted; absent
