"""Serving builders: whole manifests compared as exact dicts."""

from __future__ import annotations

from typing import Any

import pytest

from sovereign_operator.api.v1alpha1.modeldeployment import ModelDeploymentSpec
from sovereign_operator.api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from sovereign_operator.builders.context import BuildConfig, Owner, Residency
from sovereign_operator.builders.serving import FETCH_SCRIPT, ServingConfig, build_deployment
from sovereign_operator.builders.serving_children import (
    build_hpa,
    build_network_policy,
    build_pdb,
    build_service,
    service_url,
)

OWNER = Owner(name="chat", namespace="team-a", uid="uid-1", kind="ModelDeployment")
RESIDENCY = Residency("eu-only", "topology.kubernetes.io/region", ("eu-west-par", "eu-central-fra"))
BUILD = BuildConfig(runtime_image="registry.eu/sovai/training:1")
CFG = ServingConfig(
    vllm_image="registry.eu/vllm/vllm-openai:v1", server_image="registry.eu/sovai/training:1"
)
URI = "models:/chat-model/3"
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
    assert build_deployment(md, OWNER, RESIDENCY, URI, BUILD, CFG) == {
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
                        }
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
                                {"name": "SOVAI_MODEL_DIR", "value": "/models"},
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
                                "/models",
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
    pod = build_deployment(md, OWNER, RESIDENCY, URI, BUILD, CFG)["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert (server["image"], server["command"], server["args"]) == (
        "registry.eu/sovai/training:1",
        ["python", "-m", "sovereign_training", "serve"],
        [
            "--model-dir",
            "/models",
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
    pod = build_deployment(spec(), OWNER, RESIDENCY, URI, BUILD, cfg)["spec"]["template"]["spec"]
    assert pod["volumes"][0] == {
        "name": "model",
        "persistentVolumeClaim": {"claimName": "model-cache"},
    }
    env = {e["name"]: e.get("value") for e in pod["initContainers"][0]["env"]}
    assert env["SOVAI_MODEL_DIR"].startswith("/models/")
    assert pod["containers"][0]["args"][0] == env["SOVAI_MODEL_DIR"]
    other = build_deployment(spec(), OWNER, RESIDENCY, "models:/other/1", BUILD, cfg)
    other_env = other["spec"]["template"]["spec"]["initContainers"][0]["env"]
    assert other_env[1]["value"] != env["SOVAI_MODEL_DIR"]


@pytest.mark.parametrize(
    ("fields", "replicas"),
    [({}, 1), ({"replicas": 3}, 3), ({"suspend": True, "replicas": 3}, 0)],
)
def test_replicas_follow_spec_and_suspend(fields: dict[str, Any], replicas: int) -> None:
    assert (
        build_deployment(spec(**fields), OWNER, RESIDENCY, URI, BUILD, CFG)["spec"]["replicas"]
        == replicas
    )


def test_autoscaling_leaves_replicas_to_the_hpa() -> None:
    md = spec(autoscaling={"minReplicas": 2, "maxReplicas": 5})
    assert "replicas" not in build_deployment(md, OWNER, RESIDENCY, URI, BUILD, CFG)["spec"]


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
