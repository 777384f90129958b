"""The KubeRay RayJob of a FineTuneJob (backend kuberay)."""

from __future__ import annotations

from typing import Any

from ..api.v1alpha1.common import INT32_MAX
from ..api.v1alpha1.finetunejob import CleanupAction, Execution, FineTuneJobSpec
from .context import (
    QUEUE_NAME_LABEL,
    SPEC_HASH_ANNOTATION,
    BuildConfig,
    Owner,
    Residency,
    spec_hash,
)
from .jobconfig import CONFIG_ANNOTATION, CONFIG_PATH, child_labels, config_digest
from .names import rayjob_name
from .podtemplate import (
    claim_volumes,
    claims_of,
    config_mount,
    config_volume,
    container_security,
    environment,
    node_affinity,
    pod_security,
    resources,
    tolerations,
)

WORKER_GROUP = "workers"
SUBMITTER_COMPONENT = "ray-submitter"
SUBMITTER_CONTAINER = "ray-job-submitter"
SUBMITTER_CPU = ("200m", "1")  # `ray job submit` only follows the log
SUBMITTER_MEMORY = ("256Mi", "1Gi")
# Its log (which the kubelet rotates) and the few files of `ray job submit`.
SUBMITTER_EPHEMERAL_STORAGE = ("64Mi", "1Gi")
METADATA_UID_KEY = "sovereign-ai.eu/job-uid"


def _pod_template(
    spec: FineTuneJobSpec,
    owner: Owner,
    residency: Residency,
    component: str,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    gpus: int = 0,
    restart_never: bool = False,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Only the workers ask for GPUs: the head and the submitter are pinned to the allowed
    regions, but not to the GPU pool, so they take no GPU node's room."""
    pod_spec: dict[str, Any] = {
        "affinity": node_affinity(residency, gpus, spec.resources.gpu_type if gpus else None),
        "tolerations": tolerations(gpus, spec.placement.tolerations),
        # The restricted Pod Security Standard, but a writable root: Ray keeps its session files
        # under /tmp/ray and Hugging Face its cache under $HOME, in the image (images/runtime).
        # No fsGroup: it would re-own every file of a pvc:// claim (datasets, checkpoints) at
        # each mount.
        "securityContext": pod_security(fs_group=False),
        "containers": [{**container, "securityContext": container_security(read_only_root=False)}],
    }
    if volumes:
        pod_spec["volumes"] = volumes
    if restart_never:
        pod_spec["restartPolicy"] = "Never"
    metadata: dict[str, Any] = {"labels": child_labels(owner, component)}
    if annotations:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": pod_spec}


def teardown_ttl(execution: Execution, succeeded: bool | None) -> int:
    """The RayJob's ttlSecondsAfterFinished, which spec.execution.cleanup decides per outcome.

    KubeRay deletes the Ray cluster that long after the job ends whatever the outcome, and
    cannot keep it instead (it suspends only RayJobs that shut down, and a shutdown refuses
    DeleteNone). So while the outcome is unknown (``succeeded`` None) the TTL is the job's
    own only when both outcomes delete the cluster; otherwise it is "never" (INT32_MAX
    seconds), and once the outcome is known the operator builds the RayJob again with that
    outcome's TTL: the job's own to delete the cluster, "never" to keep it."""
    actions = execution.cleanup
    if succeeded is None:
        wanted = {actions.on_success, actions.on_failure}
    else:
        wanted = {actions.on_success if succeeded else actions.on_failure}
    if wanted == {CleanupAction.DELETE_CLUSTER}:
        return execution.ttl_seconds_after_finished
    return INT32_MAX


def build_rayjob(
    spec: FineTuneJobSpec,
    owner: Owner,
    cfg: BuildConfig,
    residency: Residency,
    *,
    job_config: str,
    succeeded: bool | None = None,
) -> dict[str, Any]:
    """A RayJob with one head and one worker group, every pod pinned to the allowed regions.
    ``job_config`` is the job.json it runs (jobconfig.job_config_text). It travels in the head
    pod's annotations, the only pod that reads it (Ray starts the training driver there, and
    the driver hands the workers their part through Ray Train); its digest is part of the
    entrypoint, so a new job.json is a new RayJob spec too, and the trainer checks it.
    ``succeeded``: the Ray job's outcome once it has ended (see teardown_ttl)."""
    image = spec.execution.image or cfg.runtime_image
    gpus = spec.resources.gpus_per_worker
    cpu, memory = str(spec.resources.cpu), str(spec.resources.memory)
    env = environment(
        cfg,
        [spec.base_model.secret_ref, spec.dataset.secret_ref],
        residency.s3_routes,
        residency.hub_mirror,
    )
    claims = claims_of(
        [
            spec.base_model.uri,
            spec.dataset.training_uri,
            spec.dataset.validation_uri,
            spec.output.uri,
        ]
    )
    claim_vols, claim_mounts = claim_volumes(claims)

    def ray_container(
        name: str, amounts: dict[str, Any], ports: list[int], mounts: list[dict[str, Any]]
    ) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": name,
            "image": image,
            "resources": amounts,
            "env": env,
        }
        if mounts:
            container["volumeMounts"] = mounts
        if ports:
            container["ports"] = [
                {"name": port_name, "containerPort": port}
                for port_name, port in zip(("gcs", "dashboard", "client"), ports, strict=True)
            ]
        return container

    head = _pod_template(
        spec,
        owner,
        residency,
        "ray-head",
        ray_container(
            "ray-head",
            resources(cfg.head_cpu, cfg.head_memory),
            [6379, 8265, 10001],
            [config_mount(), *claim_mounts],
        ),
        [config_volume(), *claim_vols],
        annotations={CONFIG_ANNOTATION: job_config},
    )
    workers = _pod_template(
        spec,
        owner,
        residency,
        "ray-worker",
        ray_container("ray-worker", resources(cpu, memory, gpus), [], claim_mounts),
        claim_vols,
        gpus=gpus,
    )
    # No command: KubeRay fills in `ray job submit ... -- <entrypoint>` itself.
    submitter = _pod_template(
        spec,
        owner,
        residency,
        SUBMITTER_COMPONENT,
        {
            "name": SUBMITTER_CONTAINER,
            "image": image,
            "resources": {
                "requests": {
                    "cpu": SUBMITTER_CPU[0],
                    "memory": SUBMITTER_MEMORY[0],
                    "ephemeral-storage": SUBMITTER_EPHEMERAL_STORAGE[0],
                },
                "limits": {
                    "cpu": SUBMITTER_CPU[1],
                    "memory": SUBMITTER_MEMORY[1],
                    "ephemeral-storage": SUBMITTER_EPHEMERAL_STORAGE[1],
                },
            },
        },
        [],
        restart_never=True,
    )
    rayjob_spec: dict[str, Any] = {
        "entrypoint": (
            f"{cfg.training_command} --config {CONFIG_PATH} "
            f"--config-sha256 {config_digest(job_config)}"
        ),
        "submissionMode": "K8sJobMode",
        "metadata": {METADATA_UID_KEY: owner.uid},
        # KubeRay refuses to suspend a RayJob that keeps its cluster, so this is always true;
        # ttlSecondsAfterFinished delays the teardown, or puts it off for good.
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": teardown_ttl(spec.execution, succeeded),
        "backoffLimit": spec.execution.backoff_limit,
        "submitterPodTemplate": submitter,
        "rayClusterSpec": {
            "rayVersion": cfg.ray_version,
            # Ray's token authentication (Ray >= 2.52, KubeRay >= 1.5): KubeRay makes a token
            # Secret per cluster and gives it to the head, workers and submitter. Without it,
            # any pod that reaches the head's dashboard could submit code to run beside the
            # job's data and credentials.
            "authOptions": {"mode": "token"},
            "enableInTreeAutoscaling": False,
            "headGroupSpec": {
                # No CPUs for Ray on the head: the training workers (one CPU each in Ray's
                # accounting) land on the worker pods, never beside the GCS and the driver.
                "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                "template": head,
            },
            "workerGroupSpecs": [
                {
                    "groupName": WORKER_GROUP,
                    "replicas": spec.resources.workers,
                    "minReplicas": spec.resources.workers,
                    "maxReplicas": spec.resources.workers,
                    "rayStartParams": {},
                    "template": workers,
                }
            ],
        },
    }
    if spec.execution.active_deadline_seconds is not None:
        rayjob_spec["activeDeadlineSeconds"] = spec.execution.active_deadline_seconds
    if spec.suspend or not spec.placement.queue_name:
        # In a Kueue queue, spec.suspend of the RayJob is Kueue's: it suspends the job at
        # creation and lifts that on admission. The operator then states it only to stop the
        # job (spec.suspend true), so the two never fight over the field.
        rayjob_spec["suspend"] = spec.suspend
    labels = child_labels(owner, "rayjob")
    if spec.placement.queue_name:
        labels[QUEUE_NAME_LABEL] = spec.placement.queue_name
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {
            "name": rayjob_name(owner.name),
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": {SPEC_HASH_ANNOTATION: spec_hash(rayjob_spec)},
            "ownerReferences": [owner.reference()],
        },
        "spec": rayjob_spec,
    }
