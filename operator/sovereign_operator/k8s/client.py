"""Generic CRUD over any kind: JSON over urllib3, called from Kopf's thread pool."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlencode

import urllib3

from .credentials import Credentials

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
    """A thin, thread-safe client: JSON dicts in, JSON dicts out, ApiError on errors."""

    def __init__(self, credentials: Credentials, pool_size: int) -> None:
        self.credentials = credentials
        options: dict[str, Any] = {
            "maxsize": pool_size,
            "block": True,  # a thread waits for a free connection rather than opening more
            "ssl_context": credentials.ssl_context(),
            "retries": RETRIES,
            "timeout": urllib3.Timeout(total=TIMEOUT_S),
        }
        if credentials.tls_server_name:
            options["server_hostname"] = credentials.tls_server_name
        if credentials.insecure:
            options |= {"cert_reqs": "CERT_NONE", "assert_hostname": False}
        self.http: urllib3.PoolManager = (
            urllib3.ProxyManager(credentials.proxy_url, **options)
            if credentials.proxy_url
            else urllib3.PoolManager(**options)
        )

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        payload = None if body is None else json.dumps(body).encode()
        response = self._request(method, path, payload, query, content_type)
        result: Any = json.loads(response.data) if response.data else {}
        return cast(dict[str, Any], result or {})

    def _request(
        self,
        method: str,
        path: str,
        payload: bytes | None,
        query: list[tuple[str, Any]] | None,
        content_type: str,
        accept: str = "application/json",
    ) -> urllib3.BaseHTTPResponse:
        url = self.credentials.server + path + (f"?{urlencode(query)}" if query else "")
        response = self._send(method, url, payload, content_type, accept)
        if response.status == 401 and self.credentials.token is not None:
            # A rotated or expired token: fetch it again, once.
            self.credentials.token.invalidate()
            response = self._send(method, url, payload, content_type, accept)
        if response.status >= 400:
            raise ApiError(response.status, response.reason or "", response.data.decode())
        return response

    def _send(
        self, method: str, url: str, payload: bytes | None, content_type: str, accept: str
    ) -> urllib3.BaseHTTPResponse:
        headers = {"Accept": accept, "Content-Type": content_type}
        authorization = self.credentials.authorization()
        if authorization:
            headers["Authorization"] = authorization
        return self.http.request(method, url, body=payload, headers=headers)

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
        kind = kind_of(manifest)
        return self._call("POST", kind.path(manifest["metadata"].get("namespace")), manifest)

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
        response = self._request("GET", path, None, query, "application/json", accept="*/*")
        return response.data.decode(errors="replace")

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
