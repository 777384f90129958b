"""Which S3 endpoint a bucket lives at: the routes the operator gives each pod.

The operator checked every URI against the SovereigntyPolicy and resolved each bucket to a
declared endpoint. It passes the policy's S3 entries to the pods as SOVAI_S3_ROUTES
(policy.places.routes_document on the operator's side):

    {"storage": [{"buckets": "eu-*", "endpoint": "ovh-gra",
                  "url": "https://s3.gra.io.cloud.ovh.net", "region": "eu-west-gra"}],
     "modelSources": [...]}

Datasets, outputs, checkpoints and MLflow artifacts resolve through "storage"; base and served
models through "modelSources". A bucket resolves by the first entry whose pattern matches, as
the operator resolved it, and is then reached at exactly that URL: AWS_ENDPOINT_URL and the like
(from the image, or anything else in the environment) are not consulted. A bucket no entry
matches is refused. Without SOVAI_S3_ROUTES (the trainer run by hand, outside the operator's
pods) boto3's own configuration applies, AWS_ENDPOINT_URL included.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Literal

ROUTES_ENV = "SOVAI_S3_ROUTES"
Role = Literal["storage", "modelSources"]
STORAGE: Role = "storage"
MODEL_SOURCES: Role = "modelSources"


class RouteError(ValueError):
    """A bucket that no declared endpoint serves, or routes that cannot be read."""


@dataclass(frozen=True)
class S3Endpoint:
    """A declared S3 endpoint: its name in the policy, its URL and its region."""

    name: str
    url: str
    region: str


def _matches(pattern: str, bucket: str) -> bool:
    # The policy's host patterns (operator: policy.uris.host_matches).
    if pattern.startswith("*"):
        return bucket.endswith(pattern[1:])
    if pattern.endswith("*"):
        return bucket.startswith(pattern[:-1])
    return bucket == pattern


def _routes(role: Role) -> list[dict[str, str]] | None:
    raw = os.environ.get(ROUTES_ENV)
    if raw is None:
        return None
    try:
        routes = json.loads(raw)[role]
    except (ValueError, KeyError, TypeError) as error:
        raise RouteError(
            f"{ROUTES_ENV}: unreadable ({error}); it is written by the operator"
        ) from None
    if not isinstance(routes, list):
        raise RouteError(f"{ROUTES_ENV}: {role} must be a list")
    return routes


def endpoint_for(bucket: str, role: Role) -> S3Endpoint | None:
    """The declared endpoint of ``bucket``; None outside the operator's pods (no routes)."""
    routes = _routes(role)
    if routes is None:
        return None
    for route in routes:
        if _matches(route["buckets"], bucket):
            return S3Endpoint(route["endpoint"], route["url"], route["region"])
    declared = ", ".join(f"{r['buckets']} at {r['endpoint']}" for r in routes) or "(none)"
    raise RouteError(
        f"s3://{bucket}: no S3 endpoint of the SovereigntyPolicy serves this bucket "
        f"({role}); declared: {declared}"
    )


def s3_client(bucket: str, role: Role) -> Any:
    """A boto3 S3 client for ``bucket``: at its declared endpoint, path-style (the bucket is
    never made part of a host name), or boto3's own configuration outside the operator."""
    import boto3
    from botocore.config import Config

    endpoint = endpoint_for(bucket, role)
    if endpoint is None:  # boto3 reads AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL itself
        return boto3.client("s3")
    return boto3.client(
        "s3", endpoint_url=endpoint.url, config=Config(s3={"addressing_style": "path"})
    )


def bucket_of(uri: str) -> str:
    """The bucket of an s3:// URI."""
    return uri.removeprefix("s3://").split("/", 1)[0]


def endpoint_url_for(uri: str, role: Role) -> str | None:
    """The URL an s3:// URI is to be reached at: its declared endpoint's, else (outside the
    operator's pods) AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, else None (AWS)."""
    endpoint = endpoint_for(bucket_of(uri), role)
    if endpoint is not None:
        return endpoint.url
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def route_mlflow_artifacts(artifact_uri: str) -> None:
    """Point MLflow's own S3 client (it reads MLFLOW_S3_ENDPOINT_URL) at the declared endpoint
    of an s3:// artifact location; an undeclared bucket is refused. Other locations need
    nothing: mlflow-artifacts: goes through the tracking server, which the operator checked is
    a declared endpoint, and a local path stays on the node."""
    if not artifact_uri.startswith("s3://"):
        return
    url = endpoint_url_for(artifact_uri, STORAGE)
    if url:
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = url
