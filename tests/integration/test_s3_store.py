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

from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.s3store import S3Credentials

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
