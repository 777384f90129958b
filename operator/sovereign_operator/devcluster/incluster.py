"""What the local cluster runs in pods for the product to use: an MLflow tracking server, and
storage that every pod of a job can reach; and how the cluster's S3 store appears to the policy
and the pods.

Pure builders of manifests; the demo and the end-to-end tests apply them. On a customer's
cluster these are the customer's own services (docs/operator.md says which settings point at
them); here they run from the product's runtime image, pinned to the allowed region like
everything else.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..builders.context import Residency
from ..builders.podtemplate import REGION_POD_LABEL as REGION_LABEL
from ..builders.podtemplate import node_affinity
from .s3store import S3Credentials

MLFLOW_PORT = 5000
MLFLOW_DATA = "/var/lib/mlflow"


def region_affinity(regions: list[str]) -> dict[str, Any]:
    """The required node affinity to the regions that the operator's own pods get (no GPUs)."""
    return node_affinity(Residency("", REGION_LABEL, tuple(regions)), gpus=0, gpu_type=None)


def mlflow_tracking_uri(namespace: str, name: str = "mlflow") -> str:
    return f"http://{name}.{namespace}.svc.cluster.local:{MLFLOW_PORT}"


def mlflow_endpoint(namespace: str, region: str, name: str = "mlflow") -> dict[str, Any]:
    """The SovereigntyPolicy storageEndpoints entry of this tracking server: with a tracking
    URI set, the operator runs jobs only when the policy declares it (policy/places.py), and
    the chart's default policy declares none."""
    return {"name": name, "url": mlflow_tracking_uri(namespace, name), "region": region}


# The local S3 store as the policy and the pods see it (devcluster.s3store runs it).
LOCAL_S3 = "local-s3"
S3_SECRET = "s3-credentials"


def s3_endpoint(store: S3Credentials, region: str) -> dict[str, Any]:
    """The policy's storageEndpoints entry of the cluster's S3 store, with its one address
    as the CIDR the pods' egress NetworkPolicies let through."""
    host = urlsplit(store.endpoint).hostname
    return {"name": LOCAL_S3, "url": store.endpoint, "region": region, "cidrs": [f"{host}/32"]}


def local_places(store: S3Credentials, mlflow_namespace: str, region: str) -> dict[str, Any]:
    """What the chart's default policy must add (as --set-json sovereigntyPolicy.spec.KEY=...)
    for the local cluster: its MLflow and S3 store as places, and eu-* buckets on that store."""
    return {
        "storageEndpoints": [mlflow_endpoint(mlflow_namespace, region), s3_endpoint(store, region)],
        "allowedStorage": [
            {"scheme": "s3", "host": "eu-*", "endpoint": LOCAL_S3},
            {"scheme": "pvc", "host": "*"},
        ],
    }


def s3_secret(namespace: str, store: S3Credentials, name: str = S3_SECRET) -> dict[str, Any]:
    """The Secret a job's secretRef names: the store's key pair, under the credential keys
    the operator passes to pods (and nothing else)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "stringData": {
            "AWS_ACCESS_KEY_ID": store.access_key,
            "AWS_SECRET_ACCESS_KEY": store.secret_key,
        },
    }


def mlflow_server(
    namespace: str,
    image: str,
    regions: list[str],
    name: str = "mlflow",
    *,
    artifacts: tuple[S3Credentials, str] | None = None,
) -> list[dict[str, Any]]:
    """A Deployment and Service of ``mlflow server``: runs and the model registry in sqlite,
    artifacts served by the server itself (``--serve-artifacts``), so training pods upload
    models over HTTP and need no object store credentials of their own. ``artifacts`` (the
    store and a bucket): the server keeps them in that bucket of the S3 store, with the
    store's keys from the S3_SECRET Secret of its namespace; otherwise in its emptyDir. Its
    database is an emptyDir: it lasts as long as the pod, which is as long as a test or a
    demo."""
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "sovereign-ai-dev"}
    # MLflow refuses Host headers it does not know (DNS rebinding protection): the Service's
    # names, with and without the port, and loopback on any port, for the UI through
    # `kubectl port-forward` (what the demo's --keep prints).
    hosts = [
        f"{host}{port}"
        for host in (name, f"{name}.{namespace}", f"{name}.{namespace}.svc",
                     f"{name}.{namespace}.svc.cluster.local")
        for port in ("", f":{MLFLOW_PORT}")
    ] + ["localhost:*", "127.0.0.1:*"]  # fmt: skip
    command = [
        "mlflow", "server", "--host", "0.0.0.0", "--port", str(MLFLOW_PORT), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{MLFLOW_DATA}/mlflow.db",
        "--artifacts-destination",
        f"s3://{artifacts[1]}/mlflow" if artifacts else f"{MLFLOW_DATA}/artifacts",
        "--serve-artifacts", "--allowed-hosts", ",".join(hosts),
    ]  # fmt: skip
    env: list[dict[str, Any]] = []
    if artifacts is not None:
        env = [
            {"name": "MLFLOW_S3_ENDPOINT_URL", "value": artifacts[0].endpoint},
            *(
                {"name": key, "valueFrom": {"secretKeyRef": {"name": S3_SECRET, "key": key}}}
                for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
            ),
        ]
    container = {
        "name": "mlflow",
        "image": image,
        "command": command,
        "env": env,
        "ports": [{"name": "http", "containerPort": MLFLOW_PORT}],
        "volumeMounts": [{"name": "data", "mountPath": MLFLOW_DATA}],
        # A TCP probe: the HTTP one would be refused for the pod IP as its Host.
        "readinessProbe": {"tcpSocket": {"port": MLFLOW_PORT}, "periodSeconds": 2},
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"},
                      "limits": {"memory": "2Gi"}},
    }  # fmt: skip
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "affinity": region_affinity(regions),
                    "containers": [container],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [{"name": "http", "port": MLFLOW_PORT, "targetPort": "http"}],
        },
    }
    return [deployment, service]


def host_path_claim(
    name: str, namespace: str, path: str, node: str, size: str = "10Gi"
) -> list[dict[str, Any]]:
    """A PersistentVolume on a folder of the node, and the claim bound to it (no provisioner
    runs here): the shared storage that a job's head and workers all mount, for its data,
    checkpoints and output."""
    volume = f"{namespace}-{name}"
    persistent_volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": path, "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": name},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                ]}
            ]}},
        },
    }  # fmt: skip
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": volume,
            "resources": {"requests": {"storage": size}},
        },
    }
    return [persistent_volume, claim]
