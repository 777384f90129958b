"""The operator's API client and Kopf's session against the real kube-apiserver, with the
credentials the kubernetes client library reads from kubeconfig files as users write them:
mutual TLS, a token file rotated and revoked, an exec plugin; server-side apply as the
operator's field manager."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import time
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kubernetes.config import kube_config

from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.pki import CertificateAuthority
from sovereign_operator.k8s.client import (
    CONFIGMAP,
    FIELD_MANAGER,
    SECRET,
    USER_AGENT,
    ApiError,
    ApiUnavailable,
    ConfigurationError,
    Kube,
    load_configuration,
)
from sovereign_operator.k8s.ensure import ensure
from sovereign_operator.kopf_tuning import login_with_bounded_pool

pytestmark = pytest.mark.integration


def kube_of(kubeconfig: Path, pool_size: int = 1) -> Kube:
    return Kube(lambda: load_configuration(str(kubeconfig)), pool_size)


def kubeconfig_with(cluster: LocalCluster, path: Path, user: dict[str, Any], **tls: Any) -> Path:
    """A kubeconfig for the cluster's server with ``user``; ``tls`` replaces the CA entry."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server["server"], **(tls or server)}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(document))
    return path


def admin_user(cluster: LocalCluster) -> dict[str, Any]:
    return dict(yaml.safe_load(cluster.kubeconfig.read_text())["users"][0]["user"])


def reader_token(cluster: LocalCluster, namespace: str, secret: str | None = None) -> str:
    """A token of a ServiceAccount that may read and patch ConfigMaps in ``namespace``; bound
    to ``secret`` when one is named, so that deleting the Secret revokes it."""
    bound = ["--bound-object-kind=Secret", f"--bound-object-name={secret}"] if secret else []
    return str(cluster.kubectl("create", "token", "reader", "-n", namespace, *bound).stdout.strip())


@pytest.fixture
def reader(cluster: LocalCluster, namespace: str) -> str:
    cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    cluster.kubectl(
        "create", "role", "read", "--verb=get,list,patch", "--resource=configmaps",
        "-n", namespace,
    )  # fmt: skip
    cluster.kubectl(
        "create", "rolebinding", "read", "--role=read", f"--serviceaccount={namespace}:reader",
        "-n", namespace,
    )  # fmt: skip
    return namespace


def managers(obj: dict[str, Any]) -> set[tuple[str, str]]:
    return {(entry["manager"], entry["operation"]) for entry in obj["metadata"]["managedFields"]}


def test_crud_and_server_side_apply_over_mutual_tls(cluster: LocalCluster, namespace: str) -> None:
    kube = kube_of(cluster.kubeconfig, pool_size=2)
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": namespace, "labels": {"a": "1"}},
        "data": {"k": "v"},
    }
    assert ensure(kube, manifest).action == "created"
    assert ensure(kube, manifest).action == "unchanged"  # 409, then get: nothing drifted

    # Someone else changes a field the operator owns, and adds one of their own: the next
    # apply takes back its field and keeps theirs.
    cluster.kubectl(
        "patch", "configmap", "cfg", "-n", namespace, "--type=merge",
        "-p", '{"data": {"k": "edited", "theirs": "kept"}}',
    )  # fmt: skip
    corrected = ensure(kube, manifest)
    assert (corrected.action, corrected.obj["data"]) == ("patched", {"k": "v", "theirs": "kept"})
    assert (FIELD_MANAGER, "Apply") in managers(corrected.obj)
    changed = ensure(kube, {**manifest, "data": {"k": "changed"}})
    assert changed.obj["data"] == {"k": "changed", "theirs": "kept"}

    selected = kube.list(CONFIGMAP, namespace, "a=1,b notin (x,y)")
    assert [item["metadata"]["name"] for item in selected] == ["cfg"]
    assert kube.delete(CONFIGMAP, namespace, "cfg") is True
    assert kube.delete(CONFIGMAP, namespace, "cfg") is False
    assert kube.get_or_none(CONFIGMAP, namespace, "cfg") is None


def test_the_client_certificate_is_what_the_server_authorised(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    anonymous = kube_of(kubeconfig_with(cluster, tmp_path / "anonymous", {}))
    with pytest.raises(ApiError) as raised:
        anonymous.get_or_none(CONFIGMAP, namespace, "cfg")
    assert raised.value.status == 403


def test_errors_carry_the_servers_message(cluster: LocalCluster, namespace: str) -> None:
    kube = kube_of(cluster.kubeconfig)
    with pytest.raises(ApiError) as raised:
        kube.get(CONFIGMAP, namespace, "absent")
    assert raised.value.status == 404
    assert str(raised.value) == '404 Not Found: configmaps "absent" not found'


def test_untrusted_server_is_refused(cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    stranger = CertificateAuthority(tmp_path / "ca")  # not the CA that signed the server
    untrusting = kube_of(
        kubeconfig_with(
            cluster, tmp_path / "untrusting", admin_user(cluster),
            **{"certificate-authority": str(stranger.pair.cert)},
        )
    )  # fmt: skip
    with pytest.raises(ApiUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.get(CONFIGMAP, namespace, "x")
    insecure = kube_of(
        kubeconfig_with(
            cluster, tmp_path / "insecure", admin_user(cluster),
            **{"insecure-skip-tls-verify": True},
        )
    )  # fmt: skip
    assert insecure.get_or_none(CONFIGMAP, namespace, "x") is None


def test_a_missing_kubeconfig_names_itself(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=str(tmp_path / "absent")):
        load_configuration(str(tmp_path / "absent"))


def test_revoked_token_is_read_again_after_401(
    cluster: LocalCluster, reader: str, tmp_path: Path
) -> None:
    namespace = reader
    cluster.kubectl("create", "secret", "generic", "first", "-n", namespace)
    token_file = tmp_path / "token"
    token_file.write_text(reader_token(cluster, namespace, "first"))
    kube = kube_of(kubeconfig_with(cluster, tmp_path / "reader", {"tokenFile": str(token_file)}))
    assert kube.get_or_none(CONFIGMAP, namespace, "x") is None

    # The token is rotated, then the old one revoked: only the server's 401 tells the client
    # to read its credentials again.
    cluster.kubectl("create", "secret", "generic", "second", "-n", namespace)
    old = token_file.read_text()
    second = reader_token(cluster, namespace, "second")
    token_file.write_text(second)
    cluster.kubectl("delete", "secret", "first", "-n", namespace)
    wait_until_refused(cluster, tmp_path / "old", {"token": old}, namespace)
    assert kube.get_or_none(CONFIGMAP, namespace, "x") is None  # the 401, then the new token

    # Revoked again, and the file now holds nothing valid: the 401 reaches the caller.
    token_file.write_text("not-a-token")
    cluster.kubectl("delete", "secret", "second", "-n", namespace)
    wait_until_refused(cluster, tmp_path / "second", {"token": second}, namespace)
    with pytest.raises(ApiError, match="401"):
        kube.get(CONFIGMAP, namespace, "x")


def wait_until_refused(
    cluster: LocalCluster, path: Path, user: dict[str, Any], namespace: str
) -> None:
    """Until the API server refuses ``user`` (it caches a token's review for 10 s)."""
    client = kube_of(kubeconfig_with(cluster, path, user))
    deadline = time.monotonic() + 60
    while True:
        try:
            client.get_or_none(CONFIGMAP, namespace, "x")
        except ApiError as error:
            if error.status == 401:
                return
            raise
        assert time.monotonic() < deadline, "the revoked token is still accepted"
        time.sleep(1)


def test_an_exec_plugins_token_is_used(cluster: LocalCluster, reader: str, tmp_path: Path) -> None:
    namespace = reader
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": reader_token(cluster, namespace)},
    }
    plugin = tmp_path / "plugin"
    plugin.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(credential)}\nEOF\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": str(plugin),
            "interactiveMode": "Never",
        }
    }
    kube = kube_of(kubeconfig_with(cluster, tmp_path / "exec", user))
    assert kube.get_or_none(CONFIGMAP, namespace, "x") is None
    with pytest.raises(ApiError) as refused:  # the reader, not the admin: no Secrets
        kube.list(SECRET, namespace)
    assert refused.value.status == 403


def test_kopf_logs_in_through_the_client_library(
    cluster: LocalCluster, reader: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kopf's own login with the library (as when it runs with no login handler of ours),
    on the bounded session, which names the product in its User-Agent."""
    namespace = reader
    kube_of(cluster.kubeconfig).apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": namespace}}
    )
    kubeconfig = kubeconfig_with(
        cluster, tmp_path / "reader", {"token": reader_token(cluster, namespace)}
    )
    # The library reads $KUBECONFIG once, when it is imported.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    async def login_and_patch() -> tuple[str, dict[str, Any]]:
        session = login_with_bounded_pool(1, kopf.OperatorSettings(), logging.getLogger("test"))
        try:
            url = f"{session.server}/api/v1/namespaces/{namespace}/configmaps/x"
            headers = {"Content-Type": "application/merge-patch+json"}
            body = json.dumps({"data": {"by": "kopf"}})
            async with session.aiohttp_session.patch(url, data=body, headers=headers) as answer:
                assert answer.status == 200, await answer.text()
                return session.aiohttp_session.headers["User-Agent"], dict(await answer.json())
        finally:
            await session.aiohttp_session.close()

    user_agent, patched = asyncio.run(login_and_patch())
    assert patched["data"] == {"by": "kopf"}  # authenticated as the reader, and trusted
    assert user_agent == USER_AGENT
