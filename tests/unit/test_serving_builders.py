"""Serving builders: whole manifests compared as exact dicts."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sovereign_operator.api.v1alpha1.finetunejob import BaseModelSource
from sovereign_operator.api.v1alpha1.modeldeployment import ModelDeploymentSpec
from sovereign_operator.api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from sovereign_operator.builders.context import BuildConfig, Owner, Residency
from sovereign_operator.builders.serving import (
    FETCH_SCRIPT,
    ServedModel,
    ServingConfig,
    build_deployment,
    vllm_lora_rank,
)
from sovereign_operator.builders.serving_children import (
    build_hpa,
    build_network_policy,
    build_pdb,
    build_service,
    service_url,
)
from sovereign_operator.validation.model_source import resolve_model

OWNER = Owner(name="chat", namespace="team-a", uid="uid-1", kind="ModelDeployment")
RESIDENCY = Residency("eu-only", "topology.kubernetes.io/region", ("eu-west-par", "eu-central-fra"))
BUILD = BuildConfig(runtime_image="registry.eu/sovai/training:1")
CFG = ServingConfig(
    vllm_image="registry.eu/vllm/vllm-openai:v1", server_image="registry.eu/sovai/training:1"
)
URI = "models:/chat-model/3"
MODEL = ServedModel(URI)
REGION_FIELD = "metadata.labels['topology.kubernetes.io/region']"
LABELS = {
    "app.kubernetes.io/managed-by": "sovereign-ai-operator",
    "sovereign-ai.eu/modeldeployment": "chat",
    "sovereign-ai.eu/modeldeployment-uid": "uid-1",
    "sovereign-ai.eu/component": "serving",
}
SELECTOR = {"sovereign-ai.eu/modeldeployment-uid": "uid-1", "sovereign-ai.eu/component": "serving"}
METADATA = {
    "name": "chat",
    "namespace": "team-a",
    "labels": LABELS,
    "ownerReferences": [
        {
            "apiVersion": "sovereign-ai.eu/v1alpha1",
            "kind": "ModelDeployment",
            "name": "chat",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ],
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def spec(**fields: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({"model": {"uri": URI}, **fields})


def probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def test_vllm_deployment_on_gpus_is_pinned_to_allowed_regions_and_gpu_type() -> None:
    md = spec(
        replicas=2,
        resources={
            "gpusPerReplica": 2,
            "gpuType": "NVIDIA-H100-80GB-HBM3",
            "cpu": "8",
            "memory": "64Gi",
        },
        serving={"servedModelName": "chat-v3", "maxModelLen": 4096, "tensorParallelSize": 2},
        placement={"queueName": "gpu-queue"},
    )
    labels = {**LABELS, "kueue.x-k8s.io/queue-name": "gpu-queue"}
    assert build_deployment(md, OWNER, RESIDENCY, MODEL, BUILD, CFG) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**METADATA, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": SELECTOR},
            "progressDeadlineSeconds": 600,
            "revisionHistoryLimit": 3,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": labels, "annotations": {"sovereign-ai.eu/model-uri": URI}},
                "spec": {
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {
                                                "key": "topology.kubernetes.io/region",
                                                "operator": "In",
                                                "values": ["eu-central-fra", "eu-west-par"],
                                            },
                                            {
                                                "key": "nvidia.com/gpu.product",
                                                "operator": "In",
                                                "values": ["NVIDIA-H100-80GB-HBM3"],
                                            },
                                        ]
                                    }
                                ]
                            }
                        },
                        # Replicas spread over nodes, where the pool has room for that.
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "topologyKey": "kubernetes.io/hostname",
                                        "labelSelector": {"matchLabels": SELECTOR},
                                    },
                                }
                            ]
                        },
                    },
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "runAsGroup": 1000,
                        "fsGroup": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "initContainers": [
                        {
                            "name": "fetch-model",
                            "image": "registry.eu/sovai/training:1",
                            "command": ["/bin/sh", "-c", FETCH_SCRIPT],
                            "env": [
                                {"name": "SOVAI_MODEL_URI", "value": URI},
                                {"name": "SOVAI_MODEL_DIR", "value": "/models/model"},
                                {"name": "HOME", "value": "/tmp"},
                                {"name": "HF_HUB_OFFLINE", "value": "1"},
                                {
                                    "name": "SOVAI_NODE_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                                },
                                {
                                    "name": "SOVAI_NODE_REGION",
                                    "valueFrom": {"fieldRef": {"fieldPath": REGION_FIELD}},
                                },
                                {"name": "SOVAI_S3_ROUTES", "value": NO_ROUTES},
                            ],
                            "resources": {
                                "requests": {"cpu": "8", "memory": "64Gi"},
                                "limits": {"cpu": "8", "memory": "64Gi"},
                            },
                            "securityContext": CONTAINER_SECURITY,
                            "volumeMounts": [
                                {"name": "model", "mountPath": "/models"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "containers": [
                        {
                            "name": "server",
                            "image": "registry.eu/vllm/vllm-openai:v1",
                            "command": ["vllm", "serve"],
                            "args": [
                                "/models/model",
                                "--served-model-name",
                                "chat-v3",
                                "--host",
                                "0.0.0.0",
                                "--port",
                                "8000",
                                "--tensor-parallel-size",
                                "2",
                                "--max-model-len",
                                "4096",
                            ],
                            "env": [
                                {"name": "HOME", "value": "/tmp"},
                                {"name": "HF_HUB_OFFLINE", "value": "1"},
                                {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
                                {"name": "DO_NOT_TRACK", "value": "1"},
                            ],
                            "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
                            "resources": {
                                "requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"},
                                "limits": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"},
                            },
                            "securityContext": CONTAINER_SECURITY,
                            "volumeMounts": [
                                {"name": "model", "mountPath": "/models", "readOnly": True},
                                {"name": "tmp", "mountPath": "/tmp"},
                                {"name": "shm", "mountPath": "/dev/shm"},
                            ],
                            "startupProbe": probe(10, 180),
                            "readinessProbe": probe(5, 3),
                            "livenessProbe": probe(15, 4),
                        }
                    ],
                    "volumes": [
                        {"name": "model", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "shm", "emptyDir": {"medium": "Memory"}},
                    ],
                },
            },
        },
    }


def test_transformers_on_cpu_runs_the_project_server_without_gpu_or_taint_toleration() -> None:
    md = spec(runtime="transformers", resources={"gpusPerReplica": 0, "cpu": "2", "memory": "4Gi"})
    pod = build_deployment(md, OWNER, RESIDENCY, MODEL, BUILD, CFG)["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert (server["image"], server["command"], server["args"]) == (
        "registry.eu/sovai/training:1",
        ["python", "-m", "sovereign_training", "serve"],
        [
            "--model-dir",
            "/models/model",
            "--served-model-name",
            "chat",
            "--host",
            "0.0.0.0",
            "--port",
            "8000",
        ],
    )
    assert server["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    assert pod["tolerations"] == []
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
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
    assert [v["name"] for v in pod["volumes"]] == ["model", "tmp"]


def test_model_cache_claim_gives_each_model_its_own_folder_on_the_pvc() -> None:
    cfg = ServingConfig(CFG.vllm_image, CFG.server_image, model_cache_claim="model-cache")
    pod = build_deployment(spec(), OWNER, RESIDENCY, MODEL, BUILD, cfg)["spec"]["template"]["spec"]
    assert pod["volumes"][0] == {
        "name": "model",
        "persistentVolumeClaim": {"claimName": "model-cache"},
    }
    env = {e["name"]: e.get("value") for e in pod["initContainers"][0]["env"]}
    assert env["SOVAI_MODEL_DIR"].startswith("/models/")
    assert pod["containers"][0]["args"][0] == env["SOVAI_MODEL_DIR"]
    other = build_deployment(spec(), OWNER, RESIDENCY, ServedModel("models:/other/1"), BUILD, cfg)
    other_env = other["spec"]["template"]["spec"]["initContainers"][0]["env"]
    assert other_env[1]["value"] != env["SOVAI_MODEL_DIR"]


HUB_TOKEN = {"name": "hub", "key": "HF_TOKEN"}
BASE = BaseModelSource.model_validate(
    {"uri": "hf://org/base-7b", "revision": "abc123", "secretRef": HUB_TOKEN}
)
ADAPTER = ServedModel("pvc://adapters/chat/1", BASE, adapter_rank=24)


NO_ROUTES = '{"modelSources":[],"storage":[]}'


def env_of(container: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container["env"]}


def test_vllm_serves_an_unmerged_adapter_as_a_lora_module_on_its_fetched_base() -> None:
    pod = build_deployment(spec(), OWNER, RESIDENCY, ADAPTER, BUILD, CFG)["spec"]["template"]
    fetch_base, fetch_adapter = pod["spec"]["initContainers"]
    assert (fetch_base["name"], fetch_adapter["name"]) == ("fetch-base-model", "fetch-model")
    assert env_of(fetch_base) | {"HF_HUB_OFFLINE": None} == {
        "SOVAI_MODEL_URI": "hf://org/base-7b",
        "SOVAI_MODEL_DIR": "/models/base",
        "SOVAI_MODEL_REVISION": "abc123",
        "HOME": "/tmp",
        "HF_HUB_OFFLINE": None,
        "SOVAI_NODE_NAME": None,
        "SOVAI_NODE_REGION": None,
        "HF_TOKEN": None,
        "SOVAI_S3_ROUTES": NO_ROUTES,
    }
    # The base's hub token reaches only the container that fetches the base, by reference.
    token = {"secretKeyRef": {"name": "hub", "key": "HF_TOKEN"}}
    assert {"name": "HF_TOKEN", "valueFrom": token} in fetch_base["env"]
    assert "HF_TOKEN" not in env_of(fetch_adapter)
    assert env_of(fetch_adapter)["SOVAI_MODEL_DIR"] == "/models/model"
    # pvc:// is read from its claim, mounted read-only in the fetch containers only.
    claim_mount = {"name": "pvc-adapters", "mountPath": "/mnt/pvc/adapters", "readOnly": True}
    assert claim_mount in fetch_adapter["volumeMounts"]
    assert claim_mount in fetch_base["volumeMounts"]
    assert {"name": "pvc-adapters", "persistentVolumeClaim": {"claimName": "adapters"}} in pod[
        "spec"
    ]["volumes"]
    server = pod["spec"]["containers"][0]
    assert all(m["name"] != "pvc-adapters" for m in server["volumeMounts"])
    assert server["args"] == [
        "/models/base",
        "--served-model-name",
        "chat-base",
        "--enable-lora",
        "--lora-modules",
        "chat=/models/model",
        "--max-lora-rank",
        "32",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--tensor-parallel-size",
        "1",
    ]
    assert pod["metadata"]["annotations"] == {
        "sovereign-ai.eu/model-uri": "pvc://adapters/chat/1",
        "sovereign-ai.eu/base-model-uri": "hf://org/base-7b",
    }


def test_transformers_serves_an_unmerged_adapter_with_its_base_folder() -> None:
    md = spec(runtime="transformers", resources={"gpusPerReplica": 0})
    pod = build_deployment(md, OWNER, RESIDENCY, ADAPTER, BUILD, CFG)["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == [
        "--model-dir",
        "/models/model",
        "--served-model-name",
        "chat",
        "--base-model-dir",
        "/models/base",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]


def test_on_a_model_cache_every_adapter_of_one_base_revision_shares_its_folder() -> None:
    cfg = ServingConfig(CFG.vllm_image, CFG.server_image, model_cache_claim="model-cache")

    def base_dir_of(model: ServedModel) -> str | None:
        pod = build_deployment(spec(), OWNER, RESIDENCY, model, BUILD, cfg)["spec"]["template"]
        return env_of(pod["spec"]["initContainers"][0])["SOVAI_MODEL_DIR"]

    other_adapter = ServedModel("pvc://adapters/other/1", BASE, adapter_rank=8)
    other_revision = ServedModel(ADAPTER.uri, BASE.model_copy(update={"revision": "def456"}))
    assert base_dir_of(ADAPTER) == base_dir_of(other_adapter)
    assert base_dir_of(ADAPTER) != base_dir_of(other_revision)


@pytest.mark.parametrize(
    ("rank", "vllm_rank"),
    [(None, None), (1, 8), (2, 8), (8, 8), (16, 16), (300, 320), (321, 512), (512, 512)],
)
def test_max_lora_rank_is_the_smallest_vllm_accepts_that_holds_the_adapter(
    rank: int | None, vllm_rank: int | None
) -> None:
    assert vllm_lora_rank(rank) == vllm_rank


@pytest.mark.parametrize(
    ("fields", "replicas"),
    [({}, 1), ({"replicas": 3}, 3), ({"suspend": True, "replicas": 3}, 0)],
)
def test_replicas_follow_spec_and_suspend(fields: dict[str, Any], replicas: int) -> None:
    assert (
        build_deployment(spec(**fields), OWNER, RESIDENCY, MODEL, BUILD, CFG)["spec"]["replicas"]
        == replicas
    )


def test_autoscaling_leaves_replicas_to_the_hpa() -> None:
    md = spec(autoscaling={"minReplicas": 2, "maxReplicas": 5})
    assert "replicas" not in build_deployment(md, OWNER, RESIDENCY, MODEL, BUILD, CFG)["spec"]


def test_service_and_url() -> None:
    md = spec(serving={"port": 9000})
    assert build_service(md, OWNER) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": METADATA,
        "spec": {
            "type": "ClusterIP",
            "selector": SELECTOR,
            "ports": [{"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    assert service_url(OWNER, md) == "http://chat.team-a.svc:9000/v1"


def test_hpa_when_autoscaling() -> None:
    md = spec(
        autoscaling={
            "minReplicas": 2,
            "maxReplicas": 6,
            "metric": "memory",
            "targetAverageUtilization": 70,
        }
    )
    assert build_hpa(md, OWNER) == {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": METADATA,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat"},
            "minReplicas": 2,
            "maxReplicas": 6,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "memory",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


@pytest.mark.parametrize(
    "fields",
    [{}, {"replicas": 3, "suspend": True}, {"autoscaling": {"maxReplicas": 4}, "suspend": True}],
)
def test_no_hpa_without_autoscaling_or_when_suspended(fields: dict[str, Any]) -> None:
    assert build_hpa(spec(**fields), OWNER) is None


@pytest.mark.parametrize(
    ("fields", "wanted"),
    [
        ({}, False),
        ({"replicas": 1}, False),
        ({"replicas": 2}, True),
        ({"replicas": 2, "suspend": True}, False),
        ({"autoscaling": {"minReplicas": 1, "maxReplicas": 3}}, True),
        ({"autoscaling": {"minReplicas": 1, "maxReplicas": 1}}, False),
    ],
)
def test_pdb_only_with_more_than_one_replica(fields: dict[str, Any], wanted: bool) -> None:
    pdb = build_pdb(spec(**fields), OWNER)
    if wanted:
        assert pdb == {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": METADATA,
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": SELECTOR}},
        }
    else:
        assert pdb is None


DNS_RULE = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}


@pytest.mark.parametrize(
    ("cidrs", "egress"),
    [
        ([], [DNS_RULE]),
        (
            ["10.20.0.0/16", "10.10.0.0/16"],
            [
                DNS_RULE,
                {
                    "to": [
                        {"ipBlock": {"cidr": "10.10.0.0/16"}},
                        {"ipBlock": {"cidr": "10.20.0.0/16"}},
                    ]
                },
            ],
        ),
    ],
)
def test_network_policy_denies_egress_but_dns_and_policy_cidrs(
    cidrs: list[str], egress: list[dict[str, Any]]
) -> None:
    policy = SovereigntyPolicySpec.model_validate(
        {"allowedRegions": ["eu-west-par"], "egress": {"allowedCIDRs": cidrs}}
    )
    assert build_network_policy(spec(), OWNER, policy) == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": METADATA,
        "spec": {
            "podSelector": {"matchLabels": SELECTOR},
            "policyTypes": ["Egress"],
            "egress": egress,
        },
    }


JOB_UID = "6f1c2d3e-aaaa-bbbb-cccc-0123456789ab"
JOB_DIGEST = "sha256:" + "ab" * 32
SUCCEEDED_JOB: dict[str, Any] = {
    "metadata": {"name": "ft", "uid": JOB_UID},
    "spec": {
        "baseModel": {"uri": "hf://mistralai/Mistral-7B-v0.3"},
        "dataset": {"trainingUri": "s3://eu-data/train.jsonl"},
        "method": {"type": "full"},
    },
    "status": {
        "phase": "Succeeded",
        "conditions": [{"type": "ResidencyVerified", "status": "True"}],
        "fineTunedModel": URI,
        "mlflow": {"modelUri": URI, "modelDigest": JOB_DIGEST},
    },
}


def fetch_env(md: ModelDeploymentSpec, job: dict[str, Any] | None) -> dict[str, str | None]:
    resolution = resolve_model(md, "team-a", job)
    assert resolution.uri is not None
    model = ServedModel(
        resolution.uri, resolution.base, resolution.adapter_rank, resolution.provenance
    )
    [fetch] = build_deployment(md, OWNER, RESIDENCY, model, BUILD, CFG)["spec"]["template"]["spec"][
        "initContainers"
    ]
    return env_of(fetch)


def test_a_fine_tune_jobs_model_is_fetched_with_the_jobs_uid_and_recorded_digest() -> None:
    md = ModelDeploymentSpec.model_validate({"model": {"fineTuneJobRef": {"name": "ft"}}})
    env = fetch_env(md, SUCCEEDED_JOB)
    assert (env["SOVAI_EXPECT_DIGEST"], env["SOVAI_EXPECT_JOB_UID"]) == (JOB_DIGEST, JOB_UID)
    # A job that recorded no digest (older trainer) is still held to its uid.
    older = {**SUCCEEDED_JOB, "status": {**SUCCEEDED_JOB["status"], "mlflow": {}}}
    env = fetch_env(md, older)
    assert "SOVAI_EXPECT_DIGEST" not in env
    assert env["SOVAI_EXPECT_JOB_UID"] == JOB_UID


def test_a_given_uri_is_fetched_without_expectations() -> None:
    env = fetch_env(spec(), None)
    assert not [name for name in env if name.startswith("SOVAI_EXPECT_")]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, []),
        (
            {"SOVAI_EXPECT_DIGEST": JOB_DIGEST, "SOVAI_EXPECT_JOB_UID": JOB_UID},
            ["--expect-digest", JOB_DIGEST, "--expect-job-uid", JOB_UID],
        ),
        # Whatever the values hold, each stays one argument: nothing is spliced into the script.
        ({"SOVAI_EXPECT_JOB_UID": "a b; rm -rf /"}, ["--expect-job-uid", "a b; rm -rf /"]),
    ],
)
def test_the_fetch_script_passes_the_expectations_as_arguments(
    env: dict[str, str], expected: list[str], tmp_path: Path
) -> None:
    """The init container's script, run by a real sh with a `python` that prints its argv."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    base = {"SOVAI_MODEL_URI": URI, "SOVAI_MODEL_DIR": "/models/model"}
    run = subprocess.run(
        ["/bin/sh", "-c", FETCH_SCRIPT],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", **base, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    argv = run.stdout.splitlines()
    assert argv == [
        "-m",
        "sovereign_training",
        "fetch",
        "--uri",
        URI,
        "--dest",
        "/models/model",
        *expected,
        "--termination-log",
        "/dev/termination-log",
    ]


def test_an_s3_model_is_fetched_with_the_secrets_credentials_at_the_declared_endpoint() -> None:
    """The fetch gets the Secret's credential keys by reference and the policy's S3 routes;
    the server container gets neither."""
    routes = '{"modelSources":[{"buckets":"eu-*","endpoint":"s3-par"}],"storage":[]}'
    served = spec(
        runtime="transformers",
        resources={"gpusPerReplica": 0, "cpu": "2", "memory": "8Gi"},
        model={"uri": "s3://eu-models/chat", "secretRef": {"name": "store-keys"}},
    )
    residency = replace(RESIDENCY, s3_routes=routes)
    pod = build_deployment(served, OWNER, residency, ServedModel("s3://eu-models/chat"), BUILD, CFG)
    [fetch] = pod["spec"]["template"]["spec"]["initContainers"]
    by_secret = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in fetch["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert by_secret == {
        key: {"name": "store-keys", "key": key, "optional": True}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN")
    }
    assert "envFrom" not in fetch
    assert fetch["env"][-1] == {"name": "SOVAI_S3_ROUTES", "value": routes}
    [server] = pod["spec"]["template"]["spec"]["containers"]
    assert not [e for e in server["env"] if "valueFrom" in e or e["name"] == "SOVAI_S3_ROUTES"]
