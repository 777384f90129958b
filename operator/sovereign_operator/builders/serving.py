"""The Deployment of a ModelDeployment: init containers fetch the model, a server serves it.

Pure: (validated spec, owner, residency, resolved model, config) -> manifest dict.

An unmerged LoRA adapter is served on its base: a second init container fetches the base into
its own folder, and the runtime loads both. The transformers server merges the adapter into the
base in memory; vLLM serves the base with the adapter as a LoRA module named servedModelName,
so clients ask for the same name whichever runtime serves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api.v1alpha1.common import SecretKeyRef
from ..api.v1alpha1.finetunejob import BaseModelSource
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
from .podtemplate import (
    claim_volumes,
    claims_of,
    container_security,
    environment,
    node_affinity,
    pod_security,
    resources,
    spread_over_nodes,
    tolerations,
)

DEPLOYMENT_NAME_LABEL = f"{LABEL_PREFIX}/modeldeployment"
DEPLOYMENT_UID_LABEL = f"{LABEL_PREFIX}/modeldeployment-uid"
MODEL_URI_ANNOTATION = f"{LABEL_PREFIX}/model-uri"
BASE_MODEL_URI_ANNOTATION = f"{LABEL_PREFIX}/base-model-uri"
SERVING_COMPONENT = "serving"
FETCH_CONTAINER = "fetch-model"
FETCH_BASE_CONTAINER = "fetch-base-model"
SERVER_CONTAINER = "server"
MODEL_VOLUME = "model"
TMP_VOLUME = "tmp"
SHM_VOLUME = "shm"
MODEL_ROOT = "/models"
# Room for the Deployment's ReplicaSet and pod suffixes within 63 characters.
SERVING_NAME_MAX = 47
# The fetch CLI writes a one-line record to the termination log, which the kubelet puts in the
# pod status: the digest of what was fetched, or why the model was refused (then it exits
# non-zero and the server never starts). The URI, folder and expectations arrive as environment
# variables, never spliced into the script.
FETCH_SCRIPT = (
    'exec python -m sovereign_training fetch --uri "$SOVAI_MODEL_URI" --dest "$SOVAI_MODEL_DIR" '
    '${SOVAI_MODEL_REVISION:+--revision "$SOVAI_MODEL_REVISION"} '
    '${SOVAI_EXPECT_DIGEST:+--expect-digest "$SOVAI_EXPECT_DIGEST"} '
    '${SOVAI_EXPECT_JOB_UID:+--expect-job-uid "$SOVAI_EXPECT_JOB_UID"} '
    "--termination-log /dev/termination-log"
)
# vLLM accepts only these --max-lora-rank values (LoRAConfig; 1 only since after 0.11, so it is
# left out); the smallest that holds the adapter is used. tests/vllm checks them with vLLM.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
BASE_NAME_SUFFIX = "-base"


@dataclass(frozen=True)
class Provenance:
    """What a FineTuneJob's model must prove before it is served: the job's uid in its MLflow
    tags and, when the job recorded one, the digest the trainer computed."""

    job_uid: str
    digest: str | None = None


@dataclass(frozen=True)
class ServedModel:
    """What the pods serve: the resolved model URI and, for an unmerged adapter, its base."""

    uri: str
    base: BaseModelSource | None = None
    adapter_rank: int | None = None  # the adapter's LoRA rank, when known (vLLM's limit)
    provenance: Provenance | None = None  # set for a fineTuneJobRef; checked by fetch-model


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
    return f"{MODEL_ROOT}/model"


def base_dir(base: BaseModelSource, cfg: ServingConfig) -> str:
    """Where an adapter's base lies in the pod; on a shared cache, one folder per URI and
    revision, so that every adapter of one base shares a single copy."""
    if cfg.model_cache_claim:
        revision = base.revision or ""
        return f"{MODEL_ROOT}/{short_hash(f'{base.uri}@{revision}', 16)}"
    return f"{MODEL_ROOT}/base"


def vllm_lora_rank(rank: int | None) -> int | None:
    """--max-lora-rank for an adapter of this rank; None keeps vLLM's default."""
    if rank is None:
        return None
    return next((r for r in VLLM_LORA_RANKS if r >= rank), VLLM_LORA_RANKS[-1])


def _probe(path: str, port: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _server_command(
    spec: ModelDeploymentSpec, owner: Owner, model: ServedModel, cfg: ServingConfig
) -> tuple[list[str], list[str]]:
    """(command, args) of the serving container for the runtime."""
    name = served_model_name(spec, owner)
    port = str(spec.serving.port)
    directory = model_dir(model.uri, cfg)
    if spec.runtime == Runtime.VLLM:
        if model.base is None:
            args = [directory, "--served-model-name", name]
        else:
            # The base answers to its own name; servedModelName is the adapter.
            args = [base_dir(model.base, cfg), "--served-model-name", name + BASE_NAME_SUFFIX]
            args += ["--enable-lora", "--lora-modules", f"{name}={directory}"]
            rank = vllm_lora_rank(model.adapter_rank)
            if rank is not None:
                args += ["--max-lora-rank", str(rank)]
        args += ["--host", "0.0.0.0", "--port", port]
        args += ["--tensor-parallel-size", str(spec.serving.tensor_parallel_size)]
        command = ["vllm", "serve"]
    else:
        args = ["--model-dir", directory, "--served-model-name", name]
        if model.base is not None:
            args += ["--base-model-dir", base_dir(model.base, cfg)]
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


def _fetch_container(
    name: str,
    uri: str,
    revision: str | None,
    directory: str,
    secrets: list[SecretKeyRef | None],
    claim_mounts: list[dict[str, Any]],
    spec: ModelDeploymentSpec,
    build: BuildConfig,
    cfg: ServingConfig,
    provenance: Provenance | None = None,
    *,
    residency: Residency,
) -> dict[str, Any]:
    env = environment(build, secrets, residency.s3_routes, residency.hub_mirror)
    expect: list[dict[str, Any]] = []
    if provenance is not None:
        if provenance.digest:
            expect.append({"name": "SOVAI_EXPECT_DIGEST", "value": provenance.digest})
        expect.append({"name": "SOVAI_EXPECT_JOB_UID", "value": provenance.job_uid})
    env = [
        {"name": "SOVAI_MODEL_URI", "value": uri},
        {"name": "SOVAI_MODEL_DIR", "value": directory},
        *([{"name": "SOVAI_MODEL_REVISION", "value": revision}] if revision else []),
        *expect,
        {"name": "HOME", "value": "/tmp"},
        *env,
    ]
    container: dict[str, Any] = {
        "name": name,
        "image": cfg.server_image,
        "command": ["/bin/sh", "-c", FETCH_SCRIPT],
        "env": env,
        "resources": resources(str(spec.resources.cpu), str(spec.resources.memory)),
        "securityContext": container_security(),
        "volumeMounts": [*_MOUNTS, *claim_mounts],
    }
    return container


_MOUNTS = [
    {"name": MODEL_VOLUME, "mountPath": MODEL_ROOT},
    {"name": TMP_VOLUME, "mountPath": "/tmp"},
]


def _annotations(model: ServedModel) -> dict[str, str]:
    annotations = {MODEL_URI_ANNOTATION: model.uri}
    if model.base is not None:
        annotations[BASE_MODEL_URI_ANNOTATION] = model.base.uri
    return annotations


def build_deployment(
    spec: ModelDeploymentSpec,
    owner: Owner,
    residency: Residency,
    model: ServedModel,
    build: BuildConfig,
    cfg: ServingConfig,
) -> dict[str, Any]:
    """The serving Deployment, every pod pinned to the allowed regions (and GPU type)."""
    gpus = spec.resources.gpus_per_replica
    cpu, memory = str(spec.resources.cpu), str(spec.resources.memory)
    image = spec.serving.image or (
        cfg.vllm_image if spec.runtime == Runtime.VLLM else cfg.server_image
    )
    # pvc:// models are read from their claims, mounted (read-only) in the fetch containers only.
    claim_vols, claim_mounts = claim_volumes(
        claims_of([model.uri, model.base.uri if model.base else None])
    )
    claim_mounts = [{**mount, "readOnly": True} for mount in claim_mounts]
    fetches = []
    if model.base is not None:
        base = model.base
        fetches.append(
            _fetch_container(
                FETCH_BASE_CONTAINER,
                base.uri,
                base.revision,
                base_dir(base, cfg),
                [base.secret_ref],
                claim_mounts,
                spec,
                build,
                cfg,
                residency=residency,
            )
        )
    directory = model_dir(model.uri, cfg)
    fetches.append(
        _fetch_container(
            FETCH_CONTAINER,
            model.uri,
            None,
            directory,
            [spec.model.secret_ref],
            claim_mounts,
            spec,
            build,
            cfg,
            model.provenance,
            residency=residency,
        )
    )
    command, args = _server_command(spec, owner, model, cfg)
    server_mounts = [{"name": MODEL_VOLUME, "mountPath": MODEL_ROOT, "readOnly": True}, _MOUNTS[1]]
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
        "securityContext": container_security(),
        "volumeMounts": server_mounts,
        # Loading weights can take long; liveness only counts once the startup probe passed.
        "startupProbe": _probe("/health", "http", 10, 180),
        "readinessProbe": _probe("/health", "http", 5, 3),
        "livenessProbe": _probe("/health", "http", 15, 4),
    }
    labels = child_labels(spec, owner)
    pod_spec: dict[str, Any] = {
        "affinity": {
            **node_affinity(residency, gpus, spec.resources.gpu_type),
            **spread_over_nodes(selector_labels(owner)),
        },
        "tolerations": tolerations(gpus, spec.placement.tolerations),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "initContainers": fetches,
        "containers": [server],
        "volumes": [*_volumes(spec, cfg), *claim_vols],
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
            "metadata": {"labels": labels, "annotations": _annotations(model)},
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
