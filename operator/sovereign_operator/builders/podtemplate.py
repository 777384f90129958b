"""Pieces shared by every pod template the operator creates: placement, env, config volume.

Every template (Ray head, workers, submitter, serving) gets the same required node affinity:
kueue#5711 shows a submitter pod escaping its flavor when only some templates are pinned.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from ..api.v1alpha1.common import (
    CREDENTIAL_KEYS,
    SecretKeyRef,
    Toleration,
    credential_variable,
)
from ..policy.places import EMPTY_ROUTES
from ..policy.places import ROUTES_ENV as S3_ROUTES_ENV
from .context import GPU_PRODUCT_LABEL, GPU_RESOURCE, BuildConfig, Residency
from .jobconfig import CONFIG_ANNOTATION, CONFIG_DIR, CONFIG_KEY

CONFIG_VOLUME = "sovereign-ai-config"
# The kubelet copies nothing from nodes to pods; since Kubernetes 1.33 the topology labels
# of the node are copied onto the pod at binding (PodTopologyLabelsAdmission), which the
# downward API can then read.
REGION_POD_LABEL = "topology.kubernetes.io/region"
HOSTNAME_LABEL = "kubernetes.io/hostname"
# The user of the project's images (images/base/Containerfile).
IMAGE_UID = 1000
MLFLOW_SECRET_KEYS = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)


def node_affinity(residency: Residency, gpus: int, gpu_type: str | None) -> dict[str, Any]:
    """A *required* node affinity to the allowed regions, and to the GPU pool when GPUs are used."""
    expressions: list[dict[str, Any]] = [
        {"key": residency.region_label, "operator": "In", "values": sorted(residency.regions)}
    ]
    if gpu_type:
        expressions.append({"key": GPU_PRODUCT_LABEL, "operator": "In", "values": [gpu_type]})
    elif gpus > 0:
        expressions.append({"key": GPU_PRODUCT_LABEL, "operator": "Exists"})
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": expressions}]
            }
        }
    }


def container_security(read_only_root: bool = True) -> dict[str, Any]:
    """The "restricted" Pod Security Standard for a container, and a read-only root file system
    where the image writes only to mounted volumes."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security(fs_group: bool = True) -> dict[str, Any]:
    """The pod's security context: the images' own user (uid and gid 1000, images/base), and
    with ``fs_group`` the same group on the pod's volumes."""
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
        "runAsGroup": IMAGE_UID,
    }
    if fs_group:
        context["fsGroup"] = IMAGE_UID
    context["seccompProfile"] = {"type": "RuntimeDefault"}
    return context


def spread_over_nodes(selector: dict[str, str]) -> dict[str, Any]:
    """A *preferred* pod anti-affinity on the node (kubernetes.io/hostname) between the pods
    that ``selector`` selects, so that one node's loss takes one replica, not all of them.
    Preferred, not required: on a full GPU pool a second replica beside the first beats none."""
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": HOSTNAME_LABEL,
                        "labelSelector": {"matchLabels": dict(selector)},
                    },
                }
            ]
        }
    }


def tolerations(gpus: int, extra: list[Toleration] | None) -> list[dict[str, Any]]:
    """The GPU taint's toleration when GPUs are used, then the spec's own tolerations."""
    result: list[dict[str, Any]] = []
    if gpus > 0:
        result.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    for toleration in extra or []:
        result.append(toleration.model_dump(mode="json", by_alias=True, exclude_none=True))
    return result


def resources(cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    """Requests equal to limits (Guaranteed QoS for training pods)."""
    amounts: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus > 0:
        amounts[GPU_RESOURCE] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _secret_env(ref: SecretKeyRef | None) -> list[dict[str, Any]]:
    """A keyed reference becomes the one credential variable its key names (the API allows
    only CREDENTIAL_KEYS); an unkeyed one, each credential key the Secret has. Nothing else in
    the Secret (an AWS_ENDPOINT_URL in any letter case, a proxy, a CA bundle) reaches a pod:
    a Secret must not send the data where the policy did not check."""
    if ref is None:
        return []
    if ref.key:
        keyed = {"name": ref.name, "key": ref.key}
        return [{"name": credential_variable(ref.key), "valueFrom": {"secretKeyRef": keyed}}]
    return [
        {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": ref.name, "key": key, "optional": True}},
        }
        for key in CREDENTIAL_KEYS
    ]


def environment(
    cfg: BuildConfig,
    secrets: list[SecretKeyRef | None],
    s3_routes: str = EMPTY_ROUTES,
    hub_mirror: str = "",
) -> list[dict[str, Any]]:
    """The env of the Ray and fetch containers. Secrets only by reference, never inline, and
    only their credential keys; the S3 endpoints the policy declared (s3_routes), last, so
    that nothing before them can stand in for them; and the hub mirror those URIs resolved
    to, if any."""
    env: list[dict[str, Any]] = [
        {"name": "HF_HUB_OFFLINE", "value": "1" if cfg.hf_hub_offline else "0"},
        {"name": "SOVAI_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {
            "name": "SOVAI_NODE_REGION",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{REGION_POD_LABEL}']"}},
        },
    ]
    if cfg.mlflow_tracking_uri:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": cfg.mlflow_tracking_uri})
    if cfg.mlflow_secret_name:
        for key in MLFLOW_SECRET_KEYS:
            env.append(
                {
                    "name": key,
                    "valueFrom": {
                        "secretKeyRef": {
                            "name": cfg.mlflow_secret_name,
                            "key": key,
                            "optional": True,
                        }
                    },
                }
            )
    env.extend({"name": name, "value": value} for name, value in cfg.extra_env)
    seen: set[str] = set()
    for ref in secrets:
        for variable in _secret_env(ref):
            if variable["name"] not in seen:  # two Secrets: the first one's key wins
                seen.add(variable["name"])
                env.append(variable)
    if hub_mirror:
        env.append({"name": "HF_ENDPOINT", "value": hub_mirror})
    env.append({"name": S3_ROUTES_ENV, "value": s3_routes})
    return env


def config_volume() -> dict[str, Any]:
    """job.json as a pod volume: the pod's own CONFIG_ANNOTATION, through the downward API.

    Carried by the RayJob itself rather than by a ConfigMap of its own, job.json costs no
    write, no object and no permission besides the RayJob, and it cannot be missing or stale
    when a pod starts: the pod is made with it."""
    field = f"metadata.annotations['{CONFIG_ANNOTATION}']"
    return {
        "name": CONFIG_VOLUME,
        "downwardAPI": {"items": [{"path": CONFIG_KEY, "fieldRef": {"fieldPath": field}}]},
    }


def config_mount() -> dict[str, Any]:
    """Where job.json appears in the containers (read-only)."""
    return {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True}


# Where the trainer looks for pvc://claim/path (sovereign_training.sources.DEFAULT_PVC_ROOT).
PVC_ROOT = "/mnt/pvc"


def claims_of(uris: list[str | None]) -> list[str]:
    """The PersistentVolumeClaims that pvc:// URIs name, each once, sorted."""
    return sorted({urlparse(uri).netloc for uri in uris if uri and uri.startswith("pvc://")})


def claim_volumes(claims: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts) that put each claim at /mnt/pvc/<claim>, where pvc://<claim>/path
    resolves. Writable: the output and the checkpoints of a job may live on the same claim as
    its data."""
    volumes = [
        {"name": f"pvc-{claim}", "persistentVolumeClaim": {"claimName": claim}} for claim in claims
    ]
    mounts = [{"name": f"pvc-{claim}", "mountPath": f"{PVC_ROOT}/{claim}"} for claim in claims]
    return volumes, mounts
