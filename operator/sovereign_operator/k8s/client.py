"""Generic CRUD over any kind with the sync kubernetes client (used from Kopf's thread pool)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException


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
    """A thin, thread-safe wrapper: JSON dicts in, JSON dicts out, ApiException on errors."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api = api_client

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        method_, url, headers, body_, post = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(method_, url, headers, body_, post, _request_timeout=30)
        data: bytes = response.read()  # type: ignore[no-untyped-call]
        if response.status >= 400:
            raise ApiException(status=response.status, reason=response.reason, body=data.decode())
        result: Any = json.loads(data) if data else {}
        return cast(dict[str, Any], result or {})

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any]:
        return self._call("GET", kind.path(namespace, name))

    def get_or_none(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.get(kind, namespace, name)
        except ApiException as error:
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

    def delete(self, kind: Kind, namespace: str | None, name: str) -> bool:
        """Delete in the background; False when it was already gone."""
        try:
            self._call("DELETE", kind.path(namespace, name), {"propagationPolicy": "Background"})
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True
