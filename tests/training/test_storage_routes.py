"""The S3 routes the operator gives a pod, read by the trainer: a bucket goes to its declared
endpoint or nowhere. The operator's side (policy.places.routes_document) builds the value."""

from __future__ import annotations

import os

import pytest

from sovereign_operator.api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from sovereign_operator.policy.places import routes_document
from sovereign_training.ray_backend import storage_filesystem
from sovereign_training.storage import (
    MODEL_SOURCES,
    ROUTES_ENV,
    STORAGE,
    RouteError,
    S3Endpoint,
    endpoint_for,
    endpoint_url_for,
    route_mlflow_artifacts,
    s3_client,
)

POLICY = SovereigntyPolicySpec.model_validate(
    {
        "allowedRegions": ["eu-west-par", "eu-central-fra"],
        "storageEndpoints": [
            {"name": "scw-par", "url": "https://s3.fr-par.scw.cloud", "region": "eu-west-par"},
            {"name": "ovh-de", "url": "https://s3.de.io.cloud.ovh.net", "region": "eu-central-fra"},
        ],
        "allowedStorage": [
            {"scheme": "s3", "host": "eu-*", "endpoint": "scw-par"},
            {"scheme": "pvc", "host": "*"},
        ],
        "allowedModelSources": [{"scheme": "s3", "host": "eu-*", "endpoint": "ovh-de"}],
    }
)
SCW = S3Endpoint("scw-par", "https://s3.fr-par.scw.cloud", "eu-west-par")
OVH = S3Endpoint("ovh-de", "https://s3.de.io.cloud.ovh.net", "eu-central-fra")


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod's environment as the operator writes it, with the usual redirects set beside it."""
    monkeypatch.setenv(ROUTES_ENV, routes_document(POLICY))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.us-east-1.amazonaws.com")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.us-east-1.amazonaws.com")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


@pytest.mark.usefixtures("routed")
def test_each_list_routes_its_own_buckets() -> None:
    assert endpoint_for("eu-data", STORAGE) == SCW
    assert endpoint_for("eu-data", MODEL_SOURCES) == OVH


@pytest.mark.usefixtures("routed")
def test_an_undeclared_bucket_goes_nowhere() -> None:
    with pytest.raises(RouteError, match=r"s3://us-data: no S3 endpoint .* declared: eu-\* at scw"):
        endpoint_for("us-data", STORAGE)


@pytest.mark.usefixtures("routed")
def test_the_client_talks_to_the_declared_endpoint_whatever_the_environment_says() -> None:
    client = s3_client("eu-data", STORAGE)
    assert client.meta.endpoint_url == SCW.url
    assert client.meta.config.s3["addressing_style"] == "path"


@pytest.mark.usefixtures("routed")
def test_checkpoints_and_mlflow_artifacts_take_the_same_route(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert endpoint_url_for("s3://eu-ckpt/run", STORAGE) == SCW.url
    path, filesystem = storage_filesystem("s3://eu-ckpt/run")
    assert path == "eu-ckpt/run"
    assert filesystem is not None
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    route_mlflow_artifacts("s3://eu-mlflow/1/abc/artifacts")
    assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == SCW.url
    with pytest.raises(RouteError):
        route_mlflow_artifacts("s3://us-mlflow/1/abc/artifacts")


def test_no_routes_means_not_in_an_operators_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer run by hand keeps boto3's own configuration."""
    monkeypatch.delenv(ROUTES_ENV, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert endpoint_for("any", STORAGE) is None
    assert endpoint_url_for("s3://any/x", STORAGE) == "http://127.0.0.1:9000"


def test_unreadable_routes_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ROUTES_ENV, "{not json")
    with pytest.raises(RouteError, match=ROUTES_ENV):
        endpoint_for("eu-data", STORAGE)
