"""The Deployment of a ModelDeployment: an init container fetches the model, a server serves it.

Pure: (validated spec, owner, residency, resolved model URI, config) -> manifest dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api.v1alpha1.modeldeployment import ModelDeploymentSpec, Runtime
from .context import (
    COMPONENT_LABEL,
    LABEL_PREFIX,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    QUEUE_NAME_LABEL,
    BuildConfig,
    Owner,
    Residency,
)
from .names import fit_name, short_hash
from .podtemplate import environment, node_affinity, resources, tolerations

DEPLOYMENT_NAME_LABEL = f"{LABEL_PREFIX}/modeldeployment"
DEPLOYMENT_UID_LABEL = f"{LABEL_PREFIX}/modeldeployment-uid"
MODEL_URI_ANNOTATION = f"{LABEL_PREFIX}/model-uri"
SERVING_COMPONENT = "serving"
FETCH_CONTAINER = "fetch-model"
SERVER_CONTAINER = "server"
MODEL_VOLUME = "model"
TMP_VOLUME = "tmp"
SHM_VOLUME = "shm"
MODEL_ROOT = "/models"
# Room for the Deployment's ReplicaSet and pod suffixes within 63 characters.
SERVING_NAME_MAX = 47
# The fetch CLI writes its record beside the model; copying it to the termination log lets the
# kubelet put it in the pod status, where the operator reads the digest of what was fetched.
# The URI and folder arrive as environment variables, never spliced into the script.
FETCH_SCRIPT = (
    'python -m sovereign_training fetch --uri "$SOVAI_MODEL_URI" --dest "$SOVAI_MODEL_DIR" '
    '&& cp "$SOVAI_MODEL_DIR/.sovai-digest" /dev/termination-log'
)
UID = 1000


@dataclass(frozen=True)
class ServingConfig:
    """Operator-wide serving defaults (from settings), besides the shared BuildConfig."""

    vllm_image: str
    server_image: str  # the project's image: `sovereign_training fetch` and `serve`
    model_cache_claim: str | None = None  # a PVC shared as model cache; None: emptyDir
    progress_deadline_seconds: int = 600


def serving_name(owner_name: str) -> str:
    """Name of the Deployment, Service, HPA, PDB and NetworkPolicy of a ModelDeployment."""
    return fit_name(owner_name, SERVING_NAME_MAX)


def served_model_name(spec: ModelDeploymentSpec, owner: Owner) -> str:
    """The model name clients send: spec.serving.servedModelName, else the object's name."""
    return spec.serving.served_model_name or owner.name


def selector_labels(owner: Owner) -> dict[str, str]:
    """Labels that select the serving pods (stable for the object's lifetime)."""
    return {DEPLOYMENT_UID_LABEL: owner.uid, COMPONENT_LABEL: SERVING_COMPONENT}


def child_labels(spec: ModelDeploymentSpec, owner: Owner) -> dict[str, str]:
    """Labels of every child and of the pods."""
    labels = {
        MANAGED_BY_LABEL: MANAGED_BY,
        DEPLOYMENT_NAME_LABEL: owner.name,
        **selector_labels(owner),
    }
    if spec.placement.queue_name:
        labels[QUEUE_NAME_LABEL] = spec.placement.queue_name
    return labels


def child_metadata(spec: ModelDeploymentSpec, owner: Owner) -> dict[str, Any]:
    """Name, namespace, labels and the controller owner reference of a child."""
    return {
        "name": serving_name(owner.name),
        "namespace": owner.namespace,
        "labels": child_labels(spec, owner),
        "ownerReferences": [owner.reference()],
    }


def wanted_replicas(spec: ModelDeploymentSpec) -> int | None:
    """Replicas the Deployment is set to; None leaves them to the HPA."""
    if spec.suspend:
        return 0
    if spec.autoscaling is not None:
        return None
    return 1 if spec.replicas is None else spec.replicas


def model_dir(model_uri: str, cfg: ServingConfig) -> str:
    """Where the model lies in the pod: one folder per model URI on a shared cache, so that
    two models never overwrite each other and a restart finds its model already there."""
    if cfg.model_cache_claim:
        return f"{MODEL_ROOT}/{short_hash(model_uri, 16)}"
    return MODEL_ROOT


def _security_context() -> dict[str, Any]:
    # The "restricted" Pod Security Standard, plus a read-only root file system.
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _probe(path: str, port: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _server_command(
    spec: ModelDeploymentSpec, owner: Owner, directory: str
) -> tuple[list[str], list[str]]:
    """(command, args) of the serving container for the runtime."""
    name = served_model_name(spec, owner)
    port = str(spec.serving.port)
    if spec.runtime == Runtime.VLLM:
        args = [
            directory,
            "--served-model-name",
            name,
            "--host",
            "0.0.0.0",
            "--port",
            port,
            "--tensor-parallel-size",
            str(spec.serving.tensor_parallel_size),
        ]
        command = ["vllm", "serve"]
    else:
        args = ["--model-dir", directory, "--served-model-name", name]
        args += ["--host", "0.0.0.0", "--port", port]
        command = ["python", "-m", "sovereign_training", "serve"]
    if spec.serving.max_model_len is not None:
        args += ["--max-model-len", str(spec.serving.max_model_len)]
    return command, args


def _server_env(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    env = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
    ]
    if spec.runtime == Runtime.VLLM:
        # No usage statistics leave the cluster.
        env += [
            {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
            {"name": "DO_NOT_TRACK", "value": "1"},
        ]
    return env


def _volumes(spec: ModelDeploymentSpec, cfg: ServingConfig) -> list[dict[str, Any]]:
    model: dict[str, Any] = (
        {"name": MODEL_VOLUME, "persistentVolumeClaim": {"claimName": cfg.model_cache_claim}}
        if cfg.model_cache_claim
        else {"name": MODEL_VOLUME, "emptyDir": {}}
    )
    volumes = [model, {"name": TMP_VOLUME, "emptyDir": {}}]
    if spec.runtime == Runtime.VLLM:
        # NCCL and vLLM's workers share tensors through /dev/shm.
        volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}})
    return volumes


def build_deployment(
    spec: ModelDeploymentSpec,
    owner: Owner,
    residency: Residency,
    model_uri: str,
    build: BuildConfig,
    cfg: ServingConfig,
) -> dict[str, Any]:
    """The serving Deployment, every pod pinned to the allowed regions (and GPU type)."""
    gpus = spec.resources.gpus_per_replica
    cpu, memory = str(spec.resources.cpu), str(spec.resources.memory)
    directory = model_dir(model_uri, cfg)
    image = spec.serving.image or (
        cfg.vllm_image if spec.runtime == Runtime.VLLM else cfg.server_image
    )
    fetch_env, fetch_env_from = environment(build, [])
    fetch_env = [
        {"name": "SOVAI_MODEL_URI", "value": model_uri},
        {"name": "SOVAI_MODEL_DIR", "value": directory},
        {"name": "HOME", "value": "/tmp"},
        *fetch_env,
    ]
    mounts = [
        {"name": MODEL_VOLUME, "mountPath": MODEL_ROOT},
        {"name": TMP_VOLUME, "mountPath": "/tmp"},
    ]
    fetch: dict[str, Any] = {
        "name": FETCH_CONTAINER,
        "image": cfg.server_image,
        "command": ["/bin/sh", "-c", FETCH_SCRIPT],
        "env": fetch_env,
        "resources": resources(cpu, memory),
        "securityContext": _security_context(),
        "volumeMounts": mounts,
    }
    if fetch_env_from:
        fetch["envFrom"] = fetch_env_from
    command, args = _server_command(spec, owner, directory)
    server_mounts = [{"name": MODEL_VOLUME, "mountPath": MODEL_ROOT, "readOnly": True}, mounts[1]]
    if spec.runtime == Runtime.VLLM:
        server_mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    server = {
        "name": SERVER_CONTAINER,
        "image": image,
        "command": command,
        "args": args,
        "env": _server_env(spec),
        "ports": [{"name": "http", "containerPort": spec.serving.port, "protocol": "TCP"}],
        "resources": resources(cpu, memory, gpus),
        "securityContext": _security_context(),
        "volumeMounts": server_mounts,
        # Loading weights can take long; liveness only counts once the startup probe passed.
        "startupProbe": _probe("/health", "http", 10, 180),
        "readinessProbe": _probe("/health", "http", 5, 3),
        "livenessProbe": _probe("/health", "http", 15, 4),
    }
    labels = child_labels(spec, owner)
    pod_spec: dict[str, Any] = {
        "affinity": node_affinity(residency, gpus, spec.resources.gpu_type),
        "tolerations": tolerations(gpus, spec.placement.tolerations),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [fetch],
        "containers": [server],
        "volumes": _volumes(spec, cfg),
    }
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(owner)},
        "progressDeadlineSeconds": cfg.progress_deadline_seconds,
        "revisionHistoryLimit": 3,
        # Never below the wanted capacity during a rollout; GPU pools rarely have spare room,
        # so at most one extra replica at a time.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": {
            "metadata": {"labels": labels, "annotations": {MODEL_URI_ANNOTATION: model_uri}},
            "spec": pod_spec,
        },
    }
    replicas = wanted_replicas(spec)
    if replicas is not None:
        deployment_spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(spec, owner),
        "spec": deployment_spec,
    }
