"""Builders are pure: whole-dict comparisons of the RayJob and job.json."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from sovereign_operator.api.v1alpha1.finetunejob import FineTuneJobSpec, ResolvedHyperparameters
from sovereign_operator.api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from sovereign_operator.builders.context import (
    SPEC_HASH_ANNOTATION,
    BuildConfig,
    Owner,
    Residency,
    spec_hash,
)
from sovereign_operator.builders.jobconfig import (
    build_job_config,
    config_digest,
    job_config_of,
    job_config_text,
)
from sovereign_operator.builders.names import (
    RAYJOB_NAME_MAX,
    network_policy_name,
    rayjob_name,
    short_hash,
)
from sovereign_operator.builders.rayjob import build_rayjob
from sovereign_operator.k8s.ensure import drift

OWNER = Owner(name="ft", namespace="team-a", uid="0000-1111")
JOB_CONFIG = '{"kind": "TrainingConfig"}'  # a job.json, as the RayJob carries it
DIGEST = config_digest(JOB_CONFIG)  # the job.json digest the entrypoint carries
RESIDENCY = Residency("eu-only", "topology.kubernetes.io/region", ("eu-west-par", "eu-central-fra"))
CFG = BuildConfig(
    runtime_image="registry.eu/sovai/training:1", mlflow_tracking_uri="http://mlflow:5000"
)
HP = ResolvedHyperparameters(
    epochs=3,
    batch_size=8,
    micro_batch_size=4,
    learning_rate=2e-4,
    max_seq_length=2048,
    warmup_ratio=0.03,
    seed=42,
)
OWNER_REF = {
    "apiVersion": "sovereign-ai.eu/v1alpha1",
    "kind": "FineTuneJob",
    "name": "ft",
    "uid": "0000-1111",
    "controller": True,
    "blockOwnerDeletion": True,
}


def labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "sovereign-ai-operator",
        "sovereign-ai.eu/finetunejob": "ft",
        "sovereign-ai.eu/job-uid": "0000-1111",
        "sovereign-ai.eu/component": component,
    }


def make_spec(**overrides: Any) -> FineTuneJobSpec:
    raw: dict[str, Any] = {
        "baseModel": {
            "uri": "hf://acme/tiny-llama",
            "secretRef": {"name": "hf", "key": "HF_TOKEN"},
        },
        "dataset": {"trainingUri": "s3://eu-data/train.jsonl"},
        "resources": {
            "workers": 2,
            "gpusPerWorker": 1,
            "gpuType": "NVIDIA-H100-80GB-HBM3",
            "cpu": "8",
            "memory": "64Gi",
        },
        "placement": {
            "queueName": "eu-gpus",
            "tolerations": [
                {"key": "team", "operator": "Equal", "value": "a", "effect": "NoSchedule"}
            ],
        },
        "execution": {
            "activeDeadlineSeconds": 7200,
            "backoffLimit": 1,
            "ttlSecondsAfterFinished": 600,
        },
    }
    raw.update(overrides)
    return FineTuneJobSpec.model_validate(raw)


REGION_IN = {
    "key": "topology.kubernetes.io/region",
    "operator": "In",
    "values": ["eu-central-fra", "eu-west-par"],
}
GPU_IN = {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}


def required(*expressions: dict[str, Any]) -> dict[str, Any]:
    terms = [{"matchExpressions": list(expressions)}]
    return {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": terms
        }}
    }  # fmt: skip


# The workers: the allowed regions and the GPU pool; the head and the submitter: the regions.
AFFINITY = required(REGION_IN, GPU_IN)
REGION_AFFINITY = required(REGION_IN)
SPEC_TOLERATIONS = [{"key": "team", "operator": "Equal", "value": "a", "effect": "NoSchedule"}]
TOLERATIONS = [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    *SPEC_TOLERATIONS,
]
ENV = [
    {"name": "HF_HUB_OFFLINE", "value": "1"},
    {"name": "SOVAI_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    {
        "name": "SOVAI_NODE_REGION",
        "valueFrom": {
            "fieldRef": {"fieldPath": "metadata.labels['topology.kubernetes.io/region']"}
        },
    },
    {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"},
    {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}},
    {"name": "SOVAI_S3_ROUTES", "value": '{"modelSources":[],"storage":[]}'},
]
# job.json: the head pod's own annotation, as a file (no ConfigMap, no write of its own).
VOLUMES = [
    {
        "name": "sovereign-ai-config",
        "downwardAPI": {
            "items": [
                {
                    "path": "job.json",
                    "fieldRef": {"fieldPath": "metadata.annotations['sovereign-ai.eu/job-config']"},
                }
            ]
        },
    }
]
MOUNTS = [{"name": "sovereign-ai-config", "mountPath": "/etc/sovereign-ai", "readOnly": True}]
# Restricted, but with a writable root (Ray's session files, the Hugging Face cache) and no
# fsGroup (no re-owning of pvc:// claims).
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": False,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.mark.parametrize(
    ("queue", "suspend", "stated"),
    [(None, False, False), (None, True, True), ("eu-gpus", True, True), ("eu-gpus", False, None)],
)
def test_rayjob_suspend_is_left_to_kueue_in_a_queue(
    queue: str | None, suspend: bool, stated: bool | None
) -> None:
    spec = make_spec(suspend=suspend)
    spec = spec.model_copy(
        update={"placement": spec.placement.model_copy(update={"queue_name": queue})}
    )
    rayjob = build_rayjob(spec, OWNER, CFG, RESIDENCY, job_config=JOB_CONFIG)
    assert rayjob["spec"].get("suspend") == stated


KEEP, DELETE = "KeepCluster", "DeleteCluster"


@pytest.mark.parametrize(
    ("on_success", "on_failure", "succeeded", "ttl"),
    [
        (DELETE, DELETE, None, 600),  # both delete: KubeRay's TTL from the start
        (DELETE, KEEP, None, 2**31 - 1),  # not known yet: nothing deleted
        (DELETE, KEEP, True, 600),
        (DELETE, KEEP, False, 2**31 - 1),
        (KEEP, DELETE, True, 2**31 - 1),
        (KEEP, DELETE, False, 600),
        (KEEP, KEEP, True, 2**31 - 1),
    ],
)
def test_cleanup_decides_the_teardown_per_outcome(
    on_success: str, on_failure: str, succeeded: bool | None, ttl: int
) -> None:
    execution = {
        "ttlSecondsAfterFinished": 600,
        "cleanup": {"onSuccess": on_success, "onFailure": on_failure},
    }
    spec = make_spec(execution=execution)
    rayjob = build_rayjob(spec, OWNER, CFG, RESIDENCY, job_config=JOB_CONFIG, succeeded=succeeded)
    assert rayjob["spec"]["ttlSecondsAfterFinished"] == ttl
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True


def test_rayjob_is_exactly_as_expected() -> None:
    expected_spec = {
        "entrypoint": (
            "python -m sovereign_training train --config /etc/sovereign-ai/job.json "
            f"--config-sha256 {DIGEST}"
        ),
        "submissionMode": "K8sJobMode",
        "metadata": {"sovereign-ai.eu/job-uid": "0000-1111"},
        "shutdownAfterJobFinishes": True,
        # The default cleanup keeps the cluster after a failure: no teardown until the
        # outcome is known (teardown_ttl).
        "ttlSecondsAfterFinished": 2**31 - 1,
        "backoffLimit": 1,
        # No suspend: the spec names a Kueue queue, and Kueue owns the RayJob's suspend.
        "submitterPodTemplate": {
            "metadata": {"labels": labels("ray-submitter")},
            "spec": {
                "affinity": REGION_AFFINITY,
                "tolerations": SPEC_TOLERATIONS,
                "securityContext": POD_SECURITY,
                "containers": [
                    {
                        "name": "ray-job-submitter",
                        "image": "registry.eu/sovai/training:1",
                        "resources": {
                            "requests": {
                                "cpu": "200m",
                                "memory": "256Mi",
                                "ephemeral-storage": "64Mi",
                            },
                            "limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi"},
                        },
                        "securityContext": CONTAINER_SECURITY,
                    }
                ],
                "restartPolicy": "Never",
            },
        },
        "rayClusterSpec": {
            "rayVersion": "2.60.0",
            "authOptions": {"mode": "token"},
            "enableInTreeAutoscaling": False,
            "headGroupSpec": {
                "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                "template": {
                    "metadata": {
                        "labels": labels("ray-head"),
                        "annotations": {"sovereign-ai.eu/job-config": JOB_CONFIG},
                    },
                    "spec": {
                        "affinity": REGION_AFFINITY,
                        "tolerations": SPEC_TOLERATIONS,
                        "securityContext": POD_SECURITY,
                        "containers": [
                            {
                                "name": "ray-head",
                                "image": "registry.eu/sovai/training:1",
                                "resources": {
                                    "requests": {"cpu": "2", "memory": "8Gi"},
                                    "limits": {"cpu": "2", "memory": "8Gi"},
                                },
                                "env": ENV,
                                "volumeMounts": MOUNTS,
                                "ports": [
                                    {"name": "gcs", "containerPort": 6379},
                                    {"name": "dashboard", "containerPort": 8265},
                                    {"name": "client", "containerPort": 10001},
                                ],
                                "securityContext": CONTAINER_SECURITY,
                            }
                        ],
                        "volumes": VOLUMES,
                    },
                },
            },
            "workerGroupSpecs": [
                {
                    "groupName": "workers",
                    "replicas": 2,
                    "minReplicas": 2,
                    "maxReplicas": 2,
                    "rayStartParams": {},
                    "template": {
                        "metadata": {"labels": labels("ray-worker")},
                        "spec": {
                            "affinity": AFFINITY,
                            "tolerations": TOLERATIONS,
                            "securityContext": POD_SECURITY,
                            "containers": [
                                {
                                    "name": "ray-worker",
                                    "image": "registry.eu/sovai/training:1",
                                    "resources": {
                                        "requests": {
                                            "cpu": "8",
                                            "memory": "64Gi",
                                            "nvidia.com/gpu": "1",
                                        },
                                        "limits": {
                                            "cpu": "8",
                                            "memory": "64Gi",
                                            "nvidia.com/gpu": "1",
                                        },
                                    },
                                    "env": ENV,
                                    "securityContext": CONTAINER_SECURITY,
                                }
                            ],
                        },
                    },
                }
            ],
        },
        "activeDeadlineSeconds": 7200,
    }
    expected = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {
            "name": "ft",
            "namespace": "team-a",
            "labels": {**labels("rayjob"), "kueue.x-k8s.io/queue-name": "eu-gpus"},
            "annotations": {"sovereign-ai.eu/spec-hash": spec_hash(expected_spec)},
            "ownerReferences": [OWNER_REF],
        },
        "spec": expected_spec,
    }
    assert build_rayjob(make_spec(), OWNER, CFG, RESIDENCY, job_config=JOB_CONFIG) == expected


def test_cpu_job_has_no_gpu_selector_toleration_or_limit() -> None:
    spec = make_spec(
        resources={"workers": 1, "gpusPerWorker": 0, "cpu": "2", "memory": "4Gi"}, placement={}
    )
    rayjob = build_rayjob(spec, OWNER, CFG, RESIDENCY, job_config=JOB_CONFIG)
    worker = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [
            {
                "matchExpressions": [
                    {
                        "key": "topology.kubernetes.io/region",
                        "operator": "In",
                        "values": ["eu-central-fra", "eu-west-par"],
                    }
                ]
            }
        ]
    }
    assert worker["tolerations"] == []
    assert worker["containers"][0]["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }


def test_gpus_without_type_pin_to_any_gpu_node() -> None:
    spec = make_spec(resources={"workers": 1, "gpusPerWorker": 2})
    cluster = build_rayjob(spec, OWNER, CFG, RESIDENCY, job_config=JOB_CONFIG)["spec"][
        "rayClusterSpec"
    ]
    pod = cluster["workerGroupSpecs"][0]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][1] == {
        "key": "nvidia.com/gpu.product",
        "operator": "Exists",
    }


def test_every_pod_template_is_pinned_to_the_allowed_regions() -> None:
    spec = make_spec()
    rayjob = build_rayjob(spec, OWNER, CFG, RESIDENCY, job_config=JOB_CONFIG)["spec"]
    templates = [
        rayjob["submitterPodTemplate"],
        rayjob["rayClusterSpec"]["headGroupSpec"]["template"],
        *(group["template"] for group in rayjob["rayClusterSpec"]["workerGroupSpecs"]),
    ]
    assert len(templates) == 3
    submitter, head, workers = templates
    # Only the workers ask for (and tolerate) GPU nodes; no pod escapes the regions.
    assert workers["spec"]["affinity"] == AFFINITY
    assert workers["spec"]["tolerations"] == TOLERATIONS
    for template in (submitter, head):
        assert template["spec"]["affinity"] == REGION_AFFINITY
        assert template["spec"]["tolerations"] == SPEC_TOLERATIONS


def test_a_secret_gives_the_pods_its_credentials_and_nothing_else() -> None:
    """Not envFrom: an AWS_ENDPOINT_URL (any case) or a proxy in the Secret would reach boto3 in
    the workers and send the data to a place the policy never checked."""
    spec = make_spec(dataset={"trainingUri": "s3://eu-data/t.jsonl", "secretRef": {"name": "s3"}})
    head = build_rayjob(spec, OWNER, CFG, RESIDENCY, job_config=JOB_CONFIG)["spec"][
        "rayClusterSpec"
    ]["headGroupSpec"]
    container = head["template"]["spec"]["containers"][0]
    assert "envFrom" not in container
    from_secret = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
        and e["valueFrom"]["secretKeyRef"]["name"] == "s3"
    }
    assert from_secret == {
        key: {"name": "s3", "key": key, "optional": True}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    }  # HF_TOKEN: the base model's keyed reference came first
    assert all("value" not in e or e["name"] != "HF_TOKEN" for e in container["env"])


def test_the_pods_get_the_policys_s3_routes_last() -> None:
    """After everything else, so that no earlier variable of the same name stands in for it."""
    routes = '{"modelSources":[],"storage":[{"buckets":"eu-*","endpoint":"s3-par"}]}'
    residency = replace(RESIDENCY, s3_routes=routes)
    spec = make_spec()
    head = build_rayjob(spec, OWNER, CFG, residency, job_config=JOB_CONFIG)["spec"][
        "rayClusterSpec"
    ]["headGroupSpec"]
    env = head["template"]["spec"]["containers"][0]["env"]
    assert env[-1] == {"name": "SOVAI_S3_ROUTES", "value": routes}
    assert "HF_ENDPOINT" not in {e["name"] for e in env}
    mirrored = replace(residency, hub_mirror="https://hf.mirror.eu")
    head = build_rayjob(spec, OWNER, CFG, mirrored, job_config=JOB_CONFIG)["spec"][
        "rayClusterSpec"
    ]["headGroupSpec"]
    env = head["template"]["spec"]["containers"][0]["env"]
    assert env[-2:] == [
        {"name": "HF_ENDPOINT", "value": "https://hf.mirror.eu"},
        {"name": "SOVAI_S3_ROUTES", "value": routes},
    ]


def test_suspend_maps_to_rayjob_suspend_and_changes_the_hash() -> None:
    running = build_rayjob(make_spec(), OWNER, CFG, RESIDENCY, job_config=JOB_CONFIG)
    suspended = build_rayjob(make_spec(suspend=True), OWNER, CFG, RESIDENCY, job_config=JOB_CONFIG)
    assert suspended["spec"]["suspend"] is True
    assert running["metadata"]["annotations"] != suspended["metadata"]["annotations"]


def test_pvc_uris_mount_their_claims_in_the_head_and_workers_not_the_submitter() -> None:
    spec = make_spec(
        baseModel={"uri": "pvc://models/tiny"},
        dataset={"trainingUri": "pvc://data/train.jsonl", "validationUri": "pvc://data/v.jsonl"},
        output={"uri": "pvc://models/out/ft"},
    )
    cluster = build_rayjob(spec, OWNER, CFG, RESIDENCY, job_config=JOB_CONFIG)["spec"][
        "rayClusterSpec"
    ]
    claims = [
        {"name": "pvc-data", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "pvc-models", "persistentVolumeClaim": {"claimName": "models"}},
    ]
    mounts = [
        {"name": "pvc-data", "mountPath": "/mnt/pvc/data"},
        {"name": "pvc-models", "mountPath": "/mnt/pvc/models"},
    ]
    head = cluster["headGroupSpec"]["template"]
    assert head["spec"]["volumes"] == [*VOLUMES, *claims]
    assert head["spec"]["containers"][0]["volumeMounts"] == [*MOUNTS, *mounts]
    # Only the head reads job.json: the workers mount the claims alone.
    worker = cluster["workerGroupSpecs"][0]["template"]
    assert worker["spec"]["volumes"] == claims
    assert worker["spec"]["containers"][0]["volumeMounts"] == mounts
    submitter = build_rayjob(spec, OWNER, CFG, RESIDENCY, job_config=JOB_CONFIG)["spec"][
        "submitterPodTemplate"
    ]
    assert "volumes" not in submitter["spec"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ft", "ft"),
        ("a" * 47, "a" * 47),
        ("llama.v2", f"llama-v2-{short_hash('llama.v2')}"),
        ("7b-run", f"j7b-run-{short_hash('7b-run')}"),
    ],
)
def test_rayjob_names(name: str, expected: str) -> None:
    assert rayjob_name(name) == expected


@pytest.mark.parametrize(
    ("one", "other"),
    [("llama.v2", "llama-v2"), ("7b-run", "j7b-run"), ("a.b.c", "a-b.c"), ("1a", "j1a")],
)
def test_names_that_clean_up_alike_get_different_children(one: str, other: str) -> None:
    assert rayjob_name(one) != rayjob_name(other)
    assert network_policy_name(one) != network_policy_name(other)


@pytest.mark.parametrize("length", [48, 63, 200, 253])
def test_long_names_are_truncated_with_a_hash_and_stay_distinct(length: int) -> None:
    name = "x" * (length - 1) + "a"
    other = "x" * (length - 1) + "b"
    assert len(rayjob_name(name)) <= RAYJOB_NAME_MAX
    assert len(network_policy_name(name)) <= 63
    assert rayjob_name(name) != rayjob_name(other)
    assert rayjob_name(name) == rayjob_name(name)


def test_job_config_follows_the_contract() -> None:
    spec = make_spec(suffix="gdpr", output={"uri": "s3://eu-models/out"})
    assert build_job_config(spec, OWNER, HP, RESIDENCY) == {
        "apiVersion": "sovereign-ai.eu/v1alpha1",
        "kind": "TrainingConfig",
        "job": {"namespace": "team-a", "name": "ft", "uid": "0000-1111"},
        "baseModel": {"uri": "hf://acme/tiny-llama", "revision": None},
        "dataset": {
            "trainingUri": "s3://eu-data/train.jsonl",
            "validationUri": None,
            "format": "chat",
            "sha256": None,
        },
        "method": {
            "type": "lora",
            "hyperparameters": {
                # Left "auto" in the spec: the trainer chooses them from the dataset's size.
                "epochs": "auto",
                "batchSize": "auto",
                "microBatchSize": "auto",
                "learningRate": 2e-4,
                "maxSeqLength": 2048,
                "warmupRatio": 0.03,
                "seed": 42,
            },
            "lora": {
                "rank": 16,
                "alpha": 32,
                "dropout": 0.05,
                "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj"],
            },
            "mergeAdapter": False,
        },
        "resources": {"workers": 2, "gpusPerWorker": 1},
        "tracking": {"experimentName": "team-a/ft", "registeredModelName": "tiny-llama-gdpr"},
        "output": {"uri": "s3://eu-models/out"},
        "checkpointing": {"everySteps": 200, "keep": 2, "maxFailures": 2},
        "placement": {"regions": ["eu-west-par", "eu-central-fra"], "policyName": "eu-only"},
    }


def test_full_method_has_no_lora_section() -> None:
    spec = make_spec(method={"type": "full"})
    assert build_job_config(spec, OWNER, HP, RESIDENCY)["method"]["lora"] is None


CHAIN_HEAD = "sha256:" + "cd" * 32


def policy_with(**facts: Any) -> SovereigntyPolicySpec:
    return SovereigntyPolicySpec.model_validate({"allowedRegions": ["eu-west-par"], **facts})


def test_job_config_carries_the_policy_facts_and_the_chain_head() -> None:
    spec = make_spec()
    policy = policy_with(
        baseModels=[
            {"uri": "hf://acme/other", "trainingFlops": 1e20},
            {"uri": "hf://acme/tiny-llama", "trainingFlops": 3.8e25},
        ],
        energy={"pue": 1.3},
    )
    document = build_job_config(spec, OWNER, HP, RESIDENCY, policy=policy, chain_head=CHAIN_HEAD)
    assert document == {
        **build_job_config(spec, OWNER, HP, RESIDENCY),
        "baseModel": {"uri": "hf://acme/tiny-llama", "revision": None, "trainingFlops": 3.8e25},
        "energy": {"pue": 1.3},
        "audit": {"chainHead": CHAIN_HEAD},
    }
    text = job_config_text(spec, OWNER, HP, RESIDENCY, policy=policy, chain_head=CHAIN_HEAD)
    assert json.loads(text) == document


@pytest.mark.parametrize(
    "policy",
    [
        policy_with(),
        policy_with(energy={}),
        # The URI must be the job's exactly: another model of the organisation, another case, a
        # trailing slash or a revision-like suffix name another model as far as a fact goes.
        policy_with(baseModels=[{"uri": "hf://acme/tiny-llama-2", "trainingFlops": 1e24}]),
        policy_with(baseModels=[{"uri": "hf://acme/Tiny-llama", "trainingFlops": 1e24}]),
        policy_with(baseModels=[{"uri": "hf://Acme/tiny-llama", "trainingFlops": 1e24}]),
    ],
    ids=["no-facts", "empty-energy", "other-model", "other-case-name", "other-case-org"],
)
def test_job_config_leaves_out_facts_not_known(policy: SovereigntyPolicySpec) -> None:
    """Absent, not null: the job.json of a job without them is the one written before they
    existed, so that its digest (in the RayJob's hash) does not move on an upgrade."""
    document = build_job_config(make_spec(), OWNER, HP, RESIDENCY, policy=policy, chain_head=None)
    assert document == build_job_config(make_spec(), OWNER, HP, RESIDENCY)
    assert "trainingFlops" not in document["baseModel"]
    assert "energy" not in document
    assert "audit" not in document


def test_job_json_travels_in_the_head_pods_annotation_as_compact_stable_json() -> None:
    spec = make_spec()
    text = job_config_text(spec, OWNER, HP, RESIDENCY)
    document = build_job_config(spec, OWNER, HP, RESIDENCY)
    assert text == json.dumps(document, sort_keys=True, separators=(",", ":"))
    rayjob = build_rayjob(spec, OWNER, CFG, RESIDENCY, job_config=text)
    assert job_config_of(rayjob) == text
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    assert head["metadata"]["annotations"] == {"sovereign-ai.eu/job-config": text}
    assert head["spec"]["volumes"] == VOLUMES
    assert head["spec"]["containers"][0]["volumeMounts"] == MOUNTS


def test_a_change_only_to_job_json_changes_the_rayjob_too() -> None:
    """epochs lives only in job.json: before, the RayJob's hash stayed the same and the new
    value never reached the trainer."""
    hashes = []
    for epochs in (3, 5):
        spec = make_spec(method={"type": "lora", "hyperparameters": {"epochs": epochs}})
        hp = HP.model_copy(update={"epochs": epochs})
        text = job_config_text(spec, OWNER, hp, RESIDENCY)
        digest = config_digest(text)
        rayjob = build_rayjob(spec, OWNER, CFG, RESIDENCY, job_config=text)
        assert rayjob["spec"]["entrypoint"].endswith(f"--config-sha256 {digest}")
        hashes.append(rayjob["metadata"]["annotations"][SPEC_HASH_ANNOTATION])
    assert hashes[0] != hashes[1]


@pytest.mark.parametrize(
    ("desired", "actual", "drifted"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({"a": 1}, {"a": 2}, True),
        ({"labels": {}}, {}, False),
        ({"suspend": False}, {}, False),
        ({"suspend": True}, {}, True),
        ({"l": [{"x": 1}]}, {"l": [{"x": 1, "protocol": "TCP"}]}, False),
        ({"l": [1, 2]}, {"l": [1]}, True),
        # The API server's canonical quantities are the same amounts (found by the fuzzer:
        # a Deployment asking for "1.5Gi" was patched every second against "1536Mi").
        (
            {"limits": {"memory": "1.5Gi", "cpu": ".5"}},
            {"limits": {"memory": "1536Mi", "cpu": "500m"}},
            False,
        ),
        (
            {"requests": {"cpu": "+1", "memory": "1e3"}},
            {"requests": {"cpu": "1", "memory": "1k"}},
            False,
        ),
        ({"limits": {"memory": "2Gi"}}, {"limits": {"memory": "1Gi"}}, True),
        ({"limits": {"cpu": "1"}}, {"limits": {}}, True),
        (
            {"env": [{"name": "X", "value": "1.5Gi"}]},
            {"env": [{"name": "X", "value": "1536Mi"}]},
            True,
        ),
    ],
)
def test_drift_ignores_server_defaults_and_omitted_zero_values(
    desired: dict[str, Any], actual: dict[str, Any], drifted: bool
) -> None:
    assert drift(desired, actual) is drifted
