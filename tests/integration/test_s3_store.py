"""The local cluster's S3-compatible store: SeaweedFS built here from its Go module, spoken to
with boto3 as the trainer and the serving fetch speak to a provider's store."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from sovereign_operator.api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.processes import free_port
from sovereign_operator.devcluster.s3store import S3Credentials
from sovereign_operator.policy.places import routes_document
from sovereign_training.sources import SourceError, dataset_file, model_dir, upload_folder_s3

pytestmark = pytest.mark.integration


def s3_client(credentials: S3Credentials, secret: str | None = None) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=credentials.endpoint,
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=secret or credentials.secret_key,
        region_name=credentials.region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


@pytest.fixture
def store(cluster: LocalCluster) -> S3Credentials:
    assert cluster.s3_credentials is not None, "the integration cluster runs its S3 store"
    return cluster.s3_credentials


def test_objects_round_trip_with_the_clusters_keys(store: S3Credentials) -> None:
    s3 = s3_client(store)
    bucket = f"eu-data-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    body = b'{"messages": [{"role": "user", "content": "Bonjour"}]}\n' * 1000
    s3.put_object(Bucket=bucket, Key="chat/train.jsonl", Body=body)
    assert s3.get_object(Bucket=bucket, Key="chat/train.jsonl")["Body"].read() == body
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="chat/")
    assert [o["Key"] for o in listed["Contents"]] == ["chat/train.jsonl"]
    assert listed["Contents"][0]["Size"] == len(body)


def test_a_wrong_key_or_no_signature_is_refused(store: S3Credentials) -> None:
    with pytest.raises(ClientError) as refused:
        s3_client(store, secret="not-the-secret").list_buckets()
    assert refused.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied")
    assert requests.get(store.endpoint, timeout=5).status_code == 403


def test_the_store_listens_only_on_the_clusters_address(
    cluster: LocalCluster, store: S3Credentials
) -> None:
    pid = cluster.component_pids()["seaweedfs"]
    listening = subprocess.run(
        ["ss", "-Hltnp"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    ours = [line.split()[3] for line in listening if f"pid={pid}," in line]
    assert ours, "weed listens on nothing?"
    assert {address.rsplit(":", 1)[0] for address in ours} == {cluster.api_host}
    assert store.endpoint == f"http://{cluster.api_host}:{store.endpoint.rsplit(':', 1)[1]}"


def test_the_keys_never_show_in_a_repr(store: S3Credentials) -> None:
    assert store.secret_key not in repr(store)


def test_a_stopped_store_leaves_nothing_behind(tmp_path: Path) -> None:
    """Its own cluster (the tier's one stops last): no process, no socket, after stop."""
    with LocalCluster(tmp_path / "cluster", kuberay=False, nodes=(), s3=True) as own:
        assert own.s3_credentials is not None
        assert own.s3_layout is not None
        sockets = [path for path in own.s3_layout.grpc_sockets() if path.exists()]
        assert sockets, "weed made no gRPC socket: the cleanup below would prove nothing"
    assert own.leftovers() == []


# -- the trainer's routes, against the real store ------------------------------------------------


@pytest.fixture
def routed_pod(store: S3Credentials, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The environment of a training pod as the operator builds it for a policy that declares
    this store for buckets eu-*, with the redirects an attacker could put beside it (an image's
    ENV, a Secret in the old envFrom days): both letter cases, pointing at a port where nothing
    listens. Returns a fresh bucket."""
    policy = SovereigntyPolicySpec.model_validate(
        {
            "allowedRegions": ["eu-west-par"],
            "storageEndpoints": [
                {"name": "local-s3", "url": store.endpoint, "region": "eu-west-par"}
            ],
            "allowedStorage": [{"scheme": "s3", "host": "eu-*", "endpoint": "local-s3"}],
            "allowedModelSources": [{"scheme": "s3", "host": "eu-*", "endpoint": "local-s3"}],
        }
    )
    monkeypatch.setenv("SOVAI_S3_ROUTES", routes_document(policy))
    nowhere = f"http://127.0.0.1:{free_port()}"
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "aws_endpoint_url"):
        monkeypatch.setenv(name, nowhere)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", store.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", store.secret_key)
    monkeypatch.setenv("AWS_REGION", store.region)
    monkeypatch.setenv("SOVAI_CACHE_DIR", str(tmp_path / "cache"))
    bucket = f"eu-data-{uuid.uuid4().hex[:8]}"
    s3_client(store).create_bucket(Bucket=bucket)
    return bucket


def test_the_trainer_reads_and_writes_at_the_declared_endpoint_only(
    store: S3Credentials, routed_pod: str, tmp_path: Path
) -> None:
    """Before the routes, boto3 in the workers followed AWS_ENDPOINT_URL wherever it pointed."""
    bucket = routed_pod
    body = b'{"text": "Bonjour"}\n' * 10
    s3_client(store).put_object(Bucket=bucket, Key="train.jsonl", Body=body)
    local = dataset_file(f"s3://{bucket}/train.jsonl", "dataset.trainingUri")
    assert local.read_bytes() == body

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    upload_folder_s3(model, f"s3://{bucket}/out/model")
    listed = s3_client(store).list_objects_v2(Bucket=bucket, Prefix="out/")
    assert [o["Key"] for o in listed["Contents"]] == ["out/model/config.json"]
    fetched = model_dir(f"s3://{bucket}/out/model")
    assert (fetched / "config.json").read_text() == "{}"


def test_a_bucket_no_endpoint_declares_is_refused_naming_the_field(routed_pod: str) -> None:
    with pytest.raises(SourceError) as refused:
        dataset_file("s3://us-data/train.jsonl", "dataset.trainingUri")
    assert str(refused.value) == (
        "dataset.trainingUri: s3://us-data: no S3 endpoint of the SovereigntyPolicy serves this "
        "bucket (storage); declared: eu-* at local-s3"
    )
