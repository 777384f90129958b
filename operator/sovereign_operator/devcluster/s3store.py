"""A real S3-compatible store for the local cluster: SeaweedFS (`weed server -s3`).

One process holds SeaweedFS's master, volume server, filer and S3 gateway, with every port,
socket, log and data file in the cluster's folder. It listens on the cluster's own address (the
real node's bridge when there is one, so that pods reach it; loopback otherwise) and nowhere
else. Requests are signed with an access key made for this cluster: an unsigned or wrongly
signed request is refused, as on a provider's store.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from .processes import free_port

# The identity the tests and the demo use; its key pair is made per cluster.
ADMIN_IDENTITY = "sovai-admin"


@dataclass(frozen=True)
class S3Credentials:
    """Where the store answers and the key pair that signs for it (never logged)."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str = "eu-west-par"


@dataclass(frozen=True)
class S3StoreLayout:
    root: Path
    host: str
    # Every listener's port, by weed's flag name (master.port, s3.port.grpc, ...).
    ports: dict[str, int]

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3.port']}"

    def grpc_sockets(self) -> list[Path]:
        """The sockets weed makes for its own services' gRPC: always in /tmp (a fixed path in
        its `server` command), so they are removed by name at stop."""
        return [
            Path(f"/tmp/seaweedfs-{service}-grpc-{self.ports[f'{service}.port.grpc']}.sock")
            for service in ("master", "volume", "filer", "s3")
        ]


def new_layout(root: Path, host: str) -> S3StoreLayout:
    """A port chosen here for every listener: two clusters on one machine never share one."""
    names = ("master", "volume", "filer", "s3")
    ports = {f"{name}.port{kind}": free_port() for name in names for kind in ("", ".grpc")}
    return S3StoreLayout(root, host, ports)


def new_credentials(endpoint: str) -> S3Credentials:
    return S3Credentials(
        endpoint=endpoint,
        access_key="SOVAI" + secrets.token_hex(8).upper(),
        secret_key=secrets.token_urlsafe(30),
    )


def identities_config(credentials: S3Credentials) -> dict[str, object]:
    """SeaweedFS's S3 identities file: one administrator, no anonymous access."""
    return {
        "identities": [
            {
                "name": ADMIN_IDENTITY,
                "credentials": [
                    {"accessKey": credentials.access_key, "secretKey": credentials.secret_key}
                ],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }


def weed_argv(weed: Path, layout: S3StoreLayout, config: Path) -> list[str]:
    """`weed server` with every listener on the cluster's address and the layout's ports,
    everything it writes in ``layout.root`` (but its gRPC sockets, see ``grpc_sockets``), and
    only what an S3 store needs (no Iceberg, Lance, WebDAV or SFTP listeners)."""
    root = layout.root
    return [
        str(weed),
        f"-logdir={root / 'logs'}",
        "server",
        f"-ip={layout.host}",
        f"-ip.bind={layout.host}",
        f"-dir={root / 'data'}",
        f"-master.dir={root / 'master'}",
        "-master.volumeSizeLimitMB=256",
        "-volume.max=16",
        "-filer",
        f"-filer.localSocket={root / 'filer.sock'}",
        "-s3",
        f"-s3.config={config}",
        f"-s3.localSocket={root / 's3.sock'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{flag}={port}" for flag, port in layout.ports.items()),
    ]


def prepare(root: Path, credentials: S3Credentials) -> Path:
    """The store's folders and its identities file (readable by this user only)."""
    for folder in ("logs", "data", "master"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    # Each bucket's collection grows 7 volumes at once by default, so 16 volumes hold only two
    # buckets with data; one at a time leaves room for a bucket per test (and locked buckets
    # can never be deleted to free theirs).
    (root / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")
    config = root / "s3-identities.json"
    config.touch(mode=0o600)
    config.write_text(json.dumps(identities_config(credentials)))
    return config


def answers(endpoint: str) -> bool:
    """The S3 gateway answers (an anonymous request is refused: that is an answer)."""
    try:
        return requests.get(endpoint, timeout=2).status_code in (200, 403)
    except requests.RequestException:
        return False


# -- what a user does with their provider's CLI: buckets and objects -----------------------------


def admin_client(store: S3Credentials) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        aws_access_key_id=store.access_key,
        aws_secret_access_key=store.secret_key,
        region_name=store.region,
        config=Config(s3={"addressing_style": "path"}),
    )


def make_bucket(store: S3Credentials, bucket: str) -> None:
    """Create ``bucket`` in the store unless it exists."""
    client = admin_client(store)
    if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=bucket)


def upload(store: S3Credentials, bucket: str, key: str, path: Path) -> str:
    """Put a file into the store (its bucket made if missing), as a user would with their
    provider's CLI; returns its s3:// URI."""
    make_bucket(store, bucket)
    admin_client(store).upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


def objects(store: S3Credentials, bucket: str, prefix: str) -> list[str]:
    """The keys under ``prefix`` in ``bucket``."""
    listed = admin_client(store).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def make_locked_bucket(store: S3Credentials, bucket: str, days: int = 1) -> None:
    """Create ``bucket`` with Object Lock in COMPLIANCE mode, as an administrator makes the
    audit log's bucket: no version in it can be changed or deleted for ``days``, not even by
    the store's administrator."""
    client = admin_client(store)
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    client.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": days}},
        },
    )


def audit_settings(store: S3Credentials, bucket: str, prefix: str) -> dict[str, str]:
    """The operator's audit log settings (chart config keys) for a log in this store."""
    return {
        "auditUri": f"s3://{bucket}/{prefix}",
        "auditEndpoint": store.endpoint,
        "auditRegion": store.region,
    }


def audit_environment(store: S3Credentials, bucket: str, prefix: str) -> dict[str, str]:
    """What `sovai audit` needs in its environment to read that log: the store's keys (boto3's
    own chain) and the log's place (the operator's setting names)."""
    return {
        "AWS_ACCESS_KEY_ID": store.access_key,
        "AWS_SECRET_ACCESS_KEY": store.secret_key,
        "SOVAI_AUDIT_URI": f"s3://{bucket}/{prefix}",
        "SOVAI_AUDIT_ENDPOINT": store.endpoint,
        "SOVAI_AUDIT_REGION": store.region,
    }
