"""Credentials from a pod's service account or a kubeconfig, as kubectl would read them."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from sovereign_operator.k8s.credentials import (
    CredentialsError,
    ExecToken,
    StaticToken,
    TokenFile,
    in_cluster_credentials,
    kubeconfig_credentials,
    load_credentials,
)


def write_kubeconfig(path: Path, **document: Any) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def one_context(
    server: str = "https://10.0.0.1:6443",
    *,
    cluster: dict[str, Any] | None = None,
    user: Any = None,
) -> dict[str, Any]:
    return {
        "current-context": "ctx",
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "ml"}}],
        "clusters": [{"name": "c", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "u", "user": user or {}}],
    }


def test_kubeconfig_paths_are_relative_to_their_file(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    config = write_kubeconfig(
        tmp_path / "config",
        **one_context(
            cluster={"certificate-authority": "pki/ca.crt", "tls-server-name": "api.local"},
            user={"client-certificate": "pki/me.crt", "client-key": "/abs/me.key"},
        ),
    )
    credentials = kubeconfig_credentials([config])
    assert credentials.server == "https://10.0.0.1:6443"
    assert credentials.ca_file == str(tmp_path / "pki/ca.crt")
    assert credentials.cert_file == str(tmp_path / "pki/me.crt")
    assert credentials.key_file == "/abs/me.key"
    assert credentials.tls_server_name == "api.local"
    assert credentials.namespace == "ml"
    assert credentials.authorization() is None


def test_inline_data_is_decoded_to_pem(tmp_path: Path) -> None:
    pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    data = base64.b64encode(pem.encode()).decode()
    config = write_kubeconfig(
        tmp_path / "config",
        **one_context(
            cluster={"certificate-authority-data": data},
            user={"client-certificate-data": data, "client-key-data": data, "token": "t0k"},
        ),
    )
    credentials = kubeconfig_credentials([config])
    assert credentials.ca_pem == credentials.cert_pem == credentials.key_pem == pem
    assert credentials.authorization() == "Bearer t0k"


def test_merged_files_first_value_wins(tmp_path: Path) -> None:
    first = write_kubeconfig(
        tmp_path / "a",
        **{"current-context": "ctx", "users": [{"name": "u", "user": {"token": "first"}}]},
    )
    second = write_kubeconfig(
        tmp_path / "b", **one_context("https://second:6443", user={"token": "second"})
    )
    credentials = load_credentials(
        {"KUBECONFIG": f"{first}{os.pathsep}{second}"}, service_account_dir=tmp_path / "none"
    )
    assert credentials.server == "https://second:6443"
    assert credentials.authorization() == "Bearer first"


def test_basic_auth(tmp_path: Path) -> None:
    config = write_kubeconfig(
        tmp_path / "config", **one_context(user={"username": "ada", "password": "pw"})
    )
    expected = "Basic " + base64.b64encode(b"ada:pw").decode()
    assert kubeconfig_credentials([config]).authorization() == expected


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"contexts": []}, "current-context is not set"),
        ({"current-context": "gone", "contexts": [{"name": "x"}]}, "contexts has no 'gone'"),
        (one_context(server=""), "clusters[c].server is empty"),
        (
            one_context(user={"auth-provider": {"name": "oidc", "config": {}}}),
            "auth-provider 'oidc' holds no id-token or access-token",
        ),
    ],
)
def test_bad_kubeconfig_names_the_field(
    tmp_path: Path, document: dict[str, Any], message: str
) -> None:
    config = write_kubeconfig(tmp_path / "config", **document)
    with pytest.raises(CredentialsError) as raised:
        kubeconfig_credentials([config])
    assert message in str(raised.value)
    assert str(config) in str(raised.value)


def test_missing_kubeconfig_says_so(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="no in-cluster service account"):
        load_credentials({"KUBECONFIG": str(tmp_path / "absent")}, tmp_path / "none")


def test_in_cluster_service_account(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "ca.crt").write_text("ca")
    (tmp_path / "namespace").write_text("sovai-system")
    environ = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    credentials = load_credentials({**environ, "KUBECONFIG": "/nonexistent"}, tmp_path)
    assert credentials.server == "https://[fd00::1]:443"
    assert credentials.ca_file == str(tmp_path / "ca.crt")
    assert credentials.namespace == "sovai-system"
    assert credentials.authorization() == "Bearer sa-token"
    assert in_cluster_credentials({}, tmp_path) is None  # not in a pod: the kubeconfig is used


def test_token_file_is_read_again_when_rotated(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one")
    source = TokenFile(path)
    assert source.token() == "one"
    path.write_text("two")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
    assert source.token() == "two"
    path.unlink()
    with pytest.raises(CredentialsError, match=str(path)):
        source.token()


def plugin(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "bin" / "credential-plugin"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_exec_plugin_runs_again_when_its_token_expires(tmp_path: Path) -> None:
    plugin(
        tmp_path,
        """
        import json, os, sys, time, datetime
        calls = os.path.join(os.path.dirname(sys.argv[0]), "calls")
        n = len(open(calls).read()) if os.path.exists(calls) else 0
        open(calls, "a").write("x")
        info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
        # The first token expires within the renewal margin, the second in an hour.
        expiry = time.time() + (10 if n == 0 else 3600)
        stamp = datetime.datetime.fromtimestamp(expiry, datetime.timezone.utc)
        print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential",
            "status": {"token": os.environ["PREFIX"] + sys.argv[1] + str(n),
                       "expirationTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ")}}))
        """,
    )
    config = write_kubeconfig(
        tmp_path / "config",
        **one_context(
            user={
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": "./bin/credential-plugin",  # relative to the kubeconfig
                    "args": ["-"],
                    "env": [{"name": "PREFIX", "value": "tok"}],
                }
            }
        ),
    )
    credentials = kubeconfig_credentials([config])
    assert isinstance(credentials.token, ExecToken)
    assert credentials.authorization() == "Bearer tok-0"  # expires within the margin...
    assert credentials.authorization() == "Bearer tok-1"  # ...so it was fetched again
    assert credentials.authorization() == "Bearer tok-1"  # cached until it nears expiry
    expires = credentials.token.expires_at()
    assert expires is not None
    assert expires > time.time() + 3000
    credentials.token.invalidate()  # the server said 401
    assert credentials.authorization() == "Bearer tok-2"


def test_exec_plugin_failure_is_reported(tmp_path: Path) -> None:
    script = plugin(tmp_path, "import sys\nprint('no cloud login', file=sys.stderr)\nsys.exit(3)\n")
    source = ExecToken(str(script), [], {}, "client.authentication.k8s.io/v1", tmp_path)
    with pytest.raises(CredentialsError, match="exited with 3: no cloud login"):
        source.token()
    silent = plugin(tmp_path, "import json\nprint(json.dumps({'status': {}}))\n")
    with pytest.raises(CredentialsError, match=r"returned no status\.token"):
        ExecToken(str(silent), [], {}, "v1", tmp_path).token()


def test_static_token_never_expires() -> None:
    token = StaticToken("x")
    token.invalidate()
    assert (token.token(), token.expires_at()) == ("x", None)


def test_operator_process_never_imports_the_kubernetes_library() -> None:
    """The operator's modules, Kopf included, load without the kubernetes client library."""
    code = (
        "import sys\n"
        "from sovereign_operator.k8s import keep_kubernetes_client_out\n"
        "keep_kubernetes_client_out()\n"
        "import sovereign_operator.main\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('kubernetes') and sys.modules[m])\n"
        "print(json.dumps(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", "import json\n" + code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout) == []


def test_operator_without_credentials_exits_with_the_reason(tmp_path: Path) -> None:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("KUBERNETES_")}
    environ |= {"KUBECONFIG": str(tmp_path / "absent"), "SOVAI_METRICS_PORT": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "sovereign_operator"],
        env=environ | {"SOVAI_HEALTH_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"the kubeconfig {tmp_path / 'absent'} cannot be read" in done.stdout + done.stderr
