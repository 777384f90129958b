"""Generic CRUD over any kind, JSON dicts in and out, on the official ``kubernetes`` client.

The library reads the credentials (a pod's service account, else the kubeconfig with its exec
plugins, auth providers and token files) and owns the transport (TLS, proxies, the connection
pool). This module only turns a kind and a name into a path, and the API server's answers into
dicts or ``ApiError``. Called from Kopf's thread pool: one instance serves every thread.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlencode

import urllib3
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException

from ..images.references import VERSION

FIELD_MANAGER = "sovereign-ai-operator"
USER_AGENT = f"{FIELD_MANAGER}/{VERSION}"

# Failures to connect are retried, and 429s after their Retry-After: the API server refused
# those before acting (priority and fairness, or a new kind's cache still filling), so any
# method may go again. Nothing else is: a request that reached the server may have acted.
RETRIES = urllib3.Retry(
    total=None,
    connect=3,
    read=0,
    redirect=0,
    other=0,
    status=10,
    status_forcelist=(429,),
    allowed_methods=None,
    respect_retry_after_header=True,
    backoff_factor=0.5,
    backoff_max=5,
    raise_on_status=False,
)
TIMEOUT_S = 30.0


class ConfigurationError(Exception):
    """No usable credentials: neither a pod's service account nor a readable kubeconfig."""


def load_configuration(kubeconfig: str | None = None) -> Configuration:
    """What the library reads: in a pod, its service account; elsewhere ``kubeconfig``, else
    ``$KUBECONFIG`` (a list of files) or ``~/.kube/config``, at its current context."""
    configuration = Configuration()
    if kubeconfig is None:
        try:
            kube_config.load_incluster_config(client_configuration=configuration)
            return configuration
        except kube_config.ConfigException:
            pass
    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    try:
        kube_config.load_kube_config(
            config_file=path, client_configuration=configuration, persist_config=False
        )
    except (kube_config.ConfigException, OSError, ValueError, TypeError, KeyError) as error:
        raise ConfigurationError(
            f"no in-cluster service account, and the kubeconfig {path} is not usable: {error}"
        ) from error
    return configuration


class ApiUnavailable(Exception):
    """The API server could not be reached or its TLS was refused: nothing was answered."""


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        self.status = status
        self.reason = reason
        self.body = body
        try:
            message = json.loads(body).get("message") or body
        except (ValueError, AttributeError):
            message = body
        super().__init__(f"{status} {reason}: {str(message)[:1000]}")

    @property
    def namespace_terminating(self) -> bool:
        """The API server refused to create something in a namespace being deleted."""
        return self.status == 403 and "being terminated" in str(self)


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API."""

    api_version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced:
            if namespace is None:
                raise ValueError(f"{self.plural} is namespaced: a namespace is required")
            base += f"/namespaces/{namespace}"
        parts = [base, self.plural, *(p for p in (name, sub) if p)]
        return "/".join(parts)


CONFIGMAP = Kind("v1", "configmaps")
POD = Kind("v1", "pods")
SECRET = Kind("v1", "secrets")
NAMESPACE = Kind("v1", "namespaces", namespaced=False)
NODE = Kind("v1", "nodes", namespaced=False)
RAYJOB = Kind("ray.io/v1", "rayjobs")
FINETUNEJOB = Kind("sovereign-ai.eu/v1alpha1", "finetunejobs")
SOVEREIGNTY_POLICY = Kind("sovereign-ai.eu/v1alpha1", "sovereigntypolicies", namespaced=False)
MODELDEPLOYMENT = Kind("sovereign-ai.eu/v1alpha1", "modeldeployments")
DEPLOYMENT = Kind("apps/v1", "deployments")
SERVICE = Kind("v1", "services")
HPA = Kind("autoscaling/v2", "horizontalpodautoscalers")
PDB = Kind("policy/v1", "poddisruptionbudgets")
NETWORK_POLICY = Kind("networking.k8s.io/v1", "networkpolicies")
EVENT = Kind("v1", "events")

KINDS = {
    ("v1", "ConfigMap"): CONFIGMAP,
    ("ray.io/v1", "RayJob"): RAYJOB,
    ("apps/v1", "Deployment"): DEPLOYMENT,
    ("v1", "Service"): SERVICE,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): HPA,
    ("policy/v1", "PodDisruptionBudget"): PDB,
    ("networking.k8s.io/v1", "NetworkPolicy"): NETWORK_POLICY,
    ("v1", "Event"): EVENT,
}


def kind_of(manifest: dict[str, Any]) -> Kind:
    """The Kind of a manifest dict (only the kinds the operator creates)."""
    return KINDS[(manifest["apiVersion"], manifest["kind"])]


class Kube:
    """A thin, thread-safe client: JSON dicts in, JSON dicts out, ApiError on errors.

    ``load`` makes the library's Configuration; it runs again after a 401, once, so that a
    rotated token (a file, an exec plugin) is read afresh.
    """

    def __init__(
        self, load: Callable[[], Configuration] = load_configuration, pool_size: int = 4
    ) -> None:
        self._load = load
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._api = self._connect()

    def _connect(self) -> ApiClient:
        configuration = self._load()
        configuration.retries = RETRIES
        configuration.connection_pool_maxsize = self._pool_size
        api = ApiClient(configuration)
        api.user_agent = USER_AGENT
        return api

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        data = self._request(method, path, body, query, content_type)
        result: Any = json.loads(data) if data else {}
        return cast(dict[str, Any], result or {})

    def _request(
        self,
        method: str,
        path: str,
        body: Any,
        query: list[tuple[str, Any]] | None,
        content_type: str,
        accept: str = "application/json",
    ) -> bytes:
        url = path + (f"?{urlencode(query)}" if query else "")
        api = self._api
        status, reason, data = self._send(api, method, url, body, content_type, accept)
        if status == 401:
            with self._lock:
                if self._api is api:  # another thread may have reconnected already
                    self._api = self._connect()
            status, reason, data = self._send(self._api, method, url, body, content_type, accept)
        if status >= 400:
            raise ApiError(status, reason, data.decode(errors="replace"))
        return data

    @staticmethod
    def _send(
        api: ApiClient, method: str, url: str, body: Any, content_type: str, accept: str
    ) -> tuple[int, str, bytes]:
        configuration = api.configuration
        headers = {**api.default_headers, "Accept": accept, "Content-Type": content_type}
        # The library's own step: the bearer token (refreshed by its hook), as its APIs do.
        api.update_params_for_auth(headers, [], ["BearerToken"], url, method, body)
        try:
            response = api.call_api(
                method, configuration.host + url, header_params=headers, body=body,
                _request_timeout=TIMEOUT_S,
            )  # fmt: skip
            data = response.read()
        except ApiException as error:  # the library's name for a TLS failure (status 0)
            raise ApiUnavailable(f"{method} {url}: {error.reason}") from None
        except urllib3.exceptions.HTTPError as error:
            raise ApiUnavailable(f"{method} {url}: {error}") from None
        return int(response.status), str(response.reason or ""), bytes(data or b"")

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any]:
        return self._call("GET", kind.path(namespace, name))

    def get_or_none(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.get(kind, namespace, name)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def list(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        items = self._call("GET", kind.path(namespace), query=query).get("items", [])
        return cast(list[dict[str, Any]], items)

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create, with the operator's field manager; 409 when the name is taken."""
        kind = kind_of(manifest)
        path = kind.path(manifest["metadata"].get("namespace"))
        return self._call("POST", path, manifest, query=[("fieldManager", FIELD_MANAGER)])

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply as the operator's field manager: the fields ``manifest`` holds
        become the operator's, whoever set them before (``force``); fields it leaves out
        and another manager owns are kept."""
        kind = kind_of(manifest)
        metadata = manifest["metadata"]
        return self._call(
            "PATCH",
            kind.path(metadata.get("namespace"), metadata["name"]),
            manifest,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    def merge_patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        return self._call(
            "PATCH",
            kind.path(namespace, name, subresource),
            patch,
            content_type="application/merge-patch+json",
        )

    def log_tail(
        self, namespace: str, pod: str, container: str, lines: int, limit_bytes: int
    ) -> str:
        """The last ``lines`` lines of a container's log, at most ``limit_bytes`` of them: what
        the kubelet serves, so a job's progress costs a few kilobytes however long it runs."""
        query = [("container", container), ("tailLines", lines), ("limitBytes", limit_bytes)]
        path = POD.path(namespace, pod, "log")
        data = self._request("GET", path, None, query, "application/json", accept="*/*")
        return data.decode(errors="replace")

    def delete(self, kind: Kind, namespace: str | None, name: str, uid: str | None = None) -> bool:
        """Delete in the background; False when it was already gone (or, with ``uid``, when
        the object of that name is now another one)."""
        options: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        try:
            self._call("DELETE", kind.path(namespace, name), options)
        except ApiError as error:
            if error.status == 404 or (uid is not None and error.status == 409):
                return False
            raise
        return True
