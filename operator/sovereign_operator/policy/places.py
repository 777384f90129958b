"""Where each URI goes: the declared place (a storageEndpoints entry) it resolves to.

An s3:// URI names a bucket, not a service: the policy's allowedStorage or allowedModelSources
entry that matches the bucket names the endpoint the bucket lives at, and pods are given that
endpoint's URL and nothing else (the routes below), so that no variable in a Secret or an image
can send the data elsewhere. The operator's MLflow tracking URI must be a declared endpoint too,
and so must a Hugging Face mirror when the hub is not offline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..api.v1alpha1.common import StoragePlace
from ..api.v1alpha1.sovereigntypolicy import (
    SovereigntyPolicySpec,
    StorageEndpoint,
    UriPattern,
    UriScheme,
)
from .uris import host_matches, uri_host, uri_scheme

# The pods' environment variable that carries the routes (sovereign_training.storage reads it).
ROUTES_ENV = "SOVAI_S3_ROUTES"
TRACKING_FIELD = "SOVAI_MLFLOW_TRACKING_URI"


@dataclass(frozen=True)
class Platform:
    """The operator's own places (its settings), which no spec shows."""

    mlflow_tracking_uri: str | None = None
    hf_hub_offline: bool = True


# No tracking URI, hub offline: what a check sees when the caller has no settings to give.
NO_PLATFORM = Platform()


def _at(field: str, uri: str, endpoint: StorageEndpoint) -> StoragePlace:
    """The evidence of a URI that goes to a declared endpoint."""
    return StoragePlace(
        field=field,
        uri=uri,
        storage_endpoint=endpoint.name,
        url=endpoint.url,
        region=endpoint.region,
    )


@dataclass(frozen=True)
class Unresolved:
    """Why a URI resolves to no declared place (the caller turns it into a Violation)."""

    reason: str


def _match(uri: str, patterns: Sequence[UriPattern]) -> UriPattern | None:
    host = uri_host(uri)
    scheme = uri_scheme(uri)
    return next(
        (p for p in patterns if p.scheme.value == scheme and host_matches(p.host, host)), None
    )


def resolve(
    field: str,
    uri: str,
    patterns: Sequence[UriPattern],
    policy: SovereigntyPolicySpec,
    platform: Platform,
) -> StoragePlace | Unresolved | None:
    """The place ``uri`` goes to, as status records it; None when no pattern allows it at all
    (the allow-list check says so), Unresolved when one allows the name but no declared place
    serves it."""
    pattern = _match(uri, patterns)
    if pattern is None:
        return None
    if uri.startswith("models:"):
        return _tracking(field, uri, policy, platform)
    endpoint = policy.endpoint(pattern.endpoint)
    if pattern.scheme == UriScheme.S3:
        if endpoint is None:
            why = (
                f"names endpoint {pattern.endpoint}, which storageEndpoints does not declare"
                if pattern.endpoint
                else "names no endpoint (an s3 entry must say where its buckets live)"
            )
            return Unresolved(f"{uri} matches s3://{pattern.host}, which {why}")
        return _at(field, uri, endpoint)
    if pattern.scheme == UriScheme.HF:
        if endpoint is not None:
            return _at(field, uri, endpoint)
        if platform.hf_hub_offline:
            return StoragePlace(
                field=field, uri=uri, note="the node's Hugging Face cache (hub offline)"
            )
        return Unresolved(
            f"{uri}: the operator's Hugging Face hub is online, and "
            f"{pattern.scheme.value}://{pattern.host} names no mirror endpoint"
        )
    notes = {UriScheme.PVC: "a PersistentVolumeClaim", UriScheme.FILE: "a path on the node"}
    return StoragePlace(field=field, uri=uri, note=notes.get(pattern.scheme, pattern.scheme.value))


def tracking_endpoint(url: str, policy: SovereigntyPolicySpec) -> StorageEndpoint | None:
    """The declared endpoint an MLflow tracking URL is served by: same scheme, host and port,
    and a path under the endpoint's."""
    wanted = urlsplit(url)
    for endpoint in policy.storage_endpoints:
        declared = urlsplit(endpoint.url)
        if (
            (wanted.scheme, wanted.hostname, wanted.port)
            == (declared.scheme, declared.hostname, declared.port)
            and not wanted.username
            and (wanted.path.rstrip("/") + "/").startswith(declared.path.rstrip("/") + "/")
        ):
            return endpoint
    return None


def tracking_place(
    policy: SovereigntyPolicySpec, platform: Platform
) -> StoragePlace | Unresolved | None:
    """Where runs and registered models go (the operator's tracking URI); None when unset."""
    tracking = platform.mlflow_tracking_uri
    if tracking is None:
        return None
    endpoint = tracking_endpoint(tracking, policy)
    if endpoint is None:
        return Unresolved(f"{TRACKING_FIELD}: {tracking} is not declared in storageEndpoints")
    return _at(TRACKING_FIELD, tracking, endpoint)


def _tracking(
    field: str, uri: str, policy: SovereigntyPolicySpec, platform: Platform
) -> StoragePlace | Unresolved:
    """A models:/ URI goes where the tracking server (its registry) is."""
    server = tracking_place(policy, platform)
    if server is None:
        note = "the trainer's default MLflow store (no tracking URI set)"
        return StoragePlace(field=field, uri=uri, note=note)
    if isinstance(server, Unresolved):
        tracking = platform.mlflow_tracking_uri
        return Unresolved(f"{uri}: the MLflow registry at {tracking} is not a declared endpoint")
    return server.model_copy(update={"field": field, "uri": uri})


def _routes(patterns: Sequence[UriPattern], policy: SovereigntyPolicySpec) -> list[dict[str, str]]:
    """Each s3 entry as a pod is told it: buckets matching ``buckets`` are at ``url``."""
    return [
        {"buckets": pattern.host, "endpoint": e.name, "url": e.url, "region": e.region}
        for pattern in patterns
        if pattern.scheme == UriScheme.S3 and (e := policy.endpoint(pattern.endpoint))
    ]


def _document(storage: list[dict[str, str]], model_sources: list[dict[str, str]]) -> str:
    document = {"storage": storage, "modelSources": model_sources}
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


# No S3 endpoint at all: a pod told this refuses every s3:// URI.
EMPTY_ROUTES = _document([], [])


def routes_document(policy: SovereigntyPolicySpec) -> str:
    """The value of SOVAI_S3_ROUTES: the policy's s3 entries of each list, in order, with
    their endpoints. Data, outputs, checkpoints and MLflow artifacts use "storage"; base and
    served models "modelSources". The pods resolve a bucket by the first entry that matches,
    as the operator did; a bucket no entry matches is refused, never sent to a default."""
    return _document(
        _routes(policy.allowed_storage, policy), _routes(policy.allowed_model_sources, policy)
    )


def hub_mirror(places: Sequence[StoragePlace]) -> str:
    """The Hugging Face mirror an hf:// URI of these places resolved to ("" when none): the
    pods' HF_ENDPOINT, so the hub client asks that mirror and nothing else."""
    return next((p.url for p in places if p.uri.startswith("hf://") and p.url), "")
