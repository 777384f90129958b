"""Who the operator is to the API server: the pod's service account, else a kubeconfig.

Read here rather than through the kubernetes client library: the operator needs a server, TLS
material and a bearer token, and importing that library (its generated model classes) costs
about 20 MB of resident memory in a process that must stay small with thousands of objects.
Both the operator's own client (``k8s.client``) and Kopf's session are built from these.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# An exec plugin's token is renewed this long before it expires.
EXPIRY_MARGIN_S = 30.0


class CredentialsError(Exception):
    """No usable credentials: the message says which file or field and why."""


class TokenSource(Protocol):
    def token(self) -> str:
        """The current bearer token."""

    def expires_at(self) -> float | None:
        """When the current token stops working (epoch seconds), if known."""

    def invalidate(self) -> None:
        """The server refused the token: fetch a fresh one next time."""


@dataclass
class StaticToken:
    value: str

    def token(self) -> str:
        return self.value

    def expires_at(self) -> float | None:
        return None

    def invalidate(self) -> None:
        pass


@dataclass
class TokenFile:
    """A token file that is rewritten in place (a projected service account token is rotated
    by the kubelet): read again whenever it changed."""

    path: Path
    _cached: tuple[int, str] | None = field(default=None, init=False, repr=False)

    def token(self) -> str:
        try:
            stamp = self.path.stat().st_mtime_ns
            if self._cached is None or self._cached[0] != stamp:
                self._cached = (stamp, self.path.read_text().strip())
        except OSError as error:
            raise CredentialsError(f"cannot read the token file {self.path}: {error}") from error
        return self._cached[1]

    def expires_at(self) -> float | None:
        return None

    def invalidate(self) -> None:
        self._cached = None


@dataclass
class ExecToken:
    """A kubeconfig ``user.exec`` credential plugin (client.authentication.k8s.io): run the
    command, take ``status.token``, and run it again when that token expires."""

    command: str
    args: list[str]
    env: dict[str, str]
    api_version: str
    base_dir: Path
    _cached: tuple[str, float | None] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def token(self) -> str:
        with self._lock:
            if self._cached is None or _expired(self._cached[1]):
                self._cached = self._run()
            return self._cached[0]

    def expires_at(self) -> float | None:
        with self._lock:
            return self._cached[1] if self._cached else None

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    def _run(self) -> tuple[str, float | None]:
        command = self.command
        if os.sep in command and not os.path.isabs(command):
            command = str(self.base_dir / command)  # relative to the kubeconfig, as kubectl does
        exec_info = {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": {}}
        env = {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps(exec_info)}
        try:
            done = subprocess.run(
                [command, *self.args], env=env, capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise CredentialsError(f"users[].user.exec: cannot run {command!r}: {error}") from error
        if done.returncode != 0:
            raise CredentialsError(
                f"users[].user.exec: {command!r} exited with {done.returncode}: "
                f"{done.stderr.strip()[:500]}"
            )
        try:
            status = json.loads(done.stdout).get("status") or {}
        except json.JSONDecodeError as error:
            raise CredentialsError(
                f"users[].user.exec: {command!r} did not print an ExecCredential: {error}"
            ) from error
        token = status.get("token")
        if not token:
            raise CredentialsError(
                f"users[].user.exec: {command!r} returned no status.token (client certificates "
                "from exec plugins are not supported)"
            )
        expiry = status.get("expirationTimestamp")
        return token, _parse_time(expiry) if expiry else None


def _expired(expires_at: float | None) -> bool:
    return expires_at is not None and time.time() >= expires_at - EXPIRY_MARGIN_S


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Credentials:
    """The API server's address, how to trust it, and how to authenticate to it. TLS material
    is either a file path or PEM text, never both."""

    server: str
    ca_file: str | None = None
    ca_pem: str | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    cert_file: str | None = None
    cert_pem: str | None = None
    key_file: str | None = None
    key_pem: str | None = None
    token: TokenSource | None = None
    username: str | None = None
    password: str | None = None
    namespace: str | None = None
    proxy_url: str | None = None

    def authorization(self) -> str | None:
        """The Authorization header's value, if any."""
        if self.token is not None:
            return f"Bearer {self.token.token()}"
        if self.username is not None and self.password is not None:
            pair = f"{self.username}:{self.password}".encode()
            return f"Basic {base64.b64encode(pair).decode('ascii')}"
        return None

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context: the cluster's CA (else the system's), the client certificate."""
        context = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_pem)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        with contextlib.ExitStack() as stack:
            # ssl loads a certificate chain only from files: PEM text goes through private
            # temporary files that exist only while it is loaded.
            cert = self.cert_file or _pem_file(stack, self.cert_pem)
            key = self.key_file or _pem_file(stack, self.key_pem)
            if cert:
                context.load_cert_chain(certfile=cert, keyfile=key)
        return context


def _pem_file(stack: contextlib.ExitStack, pem: str | None) -> str | None:
    if pem is None:
        return None
    descriptor, name = tempfile.mkstemp(suffix=".pem")  # readable by this user only
    stack.callback(os.unlink, name)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(pem)
    return name


def load_credentials(
    environ: Mapping[str, str] | None = None, service_account_dir: Path = SERVICE_ACCOUNT_DIR
) -> Credentials:
    """In a pod, its service account (as client-go does); elsewhere ``$KUBECONFIG`` (a list of
    files, the first value of each entry wins) or ``~/.kube/config``, current context."""
    environ = os.environ if environ is None else environ
    in_cluster = in_cluster_credentials(environ, service_account_dir)
    if in_cluster is not None:
        return in_cluster
    paths = [
        Path(path).expanduser()
        for path in environ.get("KUBECONFIG", "").split(os.pathsep)
        if path.strip()
    ] or [Path("~/.kube/config").expanduser()]
    return kubeconfig_credentials(paths)


def in_cluster_credentials(
    environ: Mapping[str, str], service_account_dir: Path
) -> Credentials | None:
    host = environ.get("KUBERNETES_SERVICE_HOST")
    port = environ.get("KUBERNETES_SERVICE_PORT")
    token_path = service_account_dir / "token"
    if not host or not port or not token_path.exists():
        return None
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    ca = service_account_dir / "ca.crt"
    namespace = service_account_dir / "namespace"
    return Credentials(
        server=f"https://{host}:{port}",
        ca_file=str(ca) if ca.exists() else None,
        token=TokenFile(token_path),
        namespace=namespace.read_text().strip() if namespace.exists() else None,
    )


def kubeconfig_credentials(paths: list[Path]) -> Credentials:
    """The current context of the merged kubeconfig files."""
    current: str | None = None
    sections: dict[str, dict[str, tuple[dict[str, Any], Path]]] = {
        "contexts": {},
        "clusters": {},
        "users": {},
    }
    for path in paths:
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise CredentialsError(
                f"no in-cluster service account, and the kubeconfig {path} cannot be read: {error}"
            ) from error
        current = current or document.get("current-context")
        for section, key in (("contexts", "context"), ("clusters", "cluster"), ("users", "user")):
            for entry in document.get(section) or []:
                sections[section].setdefault(entry["name"], (entry.get(key) or {}, path.parent))
    where = os.pathsep.join(str(path) for path in paths)
    if not current:
        raise CredentialsError(f"kubeconfig {where}: current-context is not set")
    context = _entry(sections, "contexts", current, where)[0]
    cluster, cluster_dir = _entry(sections, "clusters", context.get("cluster"), where)
    user, user_dir = (
        _entry(sections, "users", context["user"], where) if context.get("user") else ({}, None)
    )
    if not cluster.get("server"):
        raise CredentialsError(
            f"kubeconfig {where}: clusters[{context['cluster']}].server is empty"
        )
    return Credentials(
        server=cluster["server"].rstrip("/"),
        ca_file=_file(cluster.get("certificate-authority"), cluster_dir),
        ca_pem=_pem(cluster.get("certificate-authority-data")),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name"),
        cert_file=_file(user.get("client-certificate"), user_dir),
        cert_pem=_pem(user.get("client-certificate-data")),
        key_file=_file(user.get("client-key"), user_dir),
        key_pem=_pem(user.get("client-key-data")),
        token=_token_source(user, user_dir, where),
        username=user.get("username"),
        password=user.get("password"),
        namespace=context.get("namespace"),
        proxy_url=cluster.get("proxy-url"),
    )


def _entry(
    sections: dict[str, dict[str, tuple[dict[str, Any], Path]]],
    section: str,
    name: str | None,
    where: str,
) -> tuple[dict[str, Any], Path]:
    if name is None or name not in sections[section]:
        known = ", ".join(sorted(sections[section])) or "none"
        raise CredentialsError(f"kubeconfig {where}: {section} has no {name!r} (has: {known})")
    return sections[section][name]


def _file(value: str | None, base: Path | None) -> str | None:
    return _resolve(value, base) if value else None


def _resolve(value: str, base: Path | None) -> str:
    """A kubeconfig path: relative ones are relative to the file that names them."""
    path = Path(value).expanduser()
    return str(path if path.is_absolute() or base is None else base / path)


def _pem(value: str | None) -> str | None:
    return base64.b64decode(value).decode("ascii") if value else None


def _token_source(user: dict[str, Any], base: Path | None, where: str) -> TokenSource | None:
    if user.get("token"):
        return StaticToken(user["token"])
    if user.get("tokenFile"):
        return TokenFile(Path(_resolve(user["tokenFile"], base)))
    if user.get("exec"):
        plugin = user["exec"]
        return ExecToken(
            command=plugin["command"],
            args=list(plugin.get("args") or []),
            env={item["name"]: item["value"] for item in plugin.get("env") or []},
            api_version=plugin.get("apiVersion", "client.authentication.k8s.io/v1"),
            base_dir=base or Path.cwd(),
        )
    if user.get("auth-provider"):
        config = user["auth-provider"].get("config") or {}
        token = config.get("id-token") or config.get("access-token")
        if not token:
            name = user["auth-provider"].get("name")
            raise CredentialsError(
                f"kubeconfig {where}: auth-provider {name!r} holds no id-token or access-token; "
                "use an exec plugin or a token"
            )
        return StaticToken(token)
    return None
