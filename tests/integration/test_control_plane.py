"""Proof that the local control plane is real: each test fails against a mock or a partial one."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.nodes import REGION_LABEL

from .operator_process import get_json, wait_for

pytestmark = pytest.mark.integration


def test_version_reports_the_real_release(cluster: LocalCluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.36.")
    assert version["clientVersion"]["gitVersion"] == version["serverVersion"]["gitVersion"]


def test_structural_crd_prunes_unknown_fields(cluster: LocalCluster, namespace: str) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.prune.test.sovereign-ai.eu"},
        "spec": {
            "group": "prune.test.sovereign-ai.eu",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    cluster.apply(crd)
    cluster.wait_for_crds("widgets.prune.test.sovereign-ai.eu")
    widget = {
        "apiVersion": "prune.test.sovereign-ai.eu/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": namespace},
        "spec": {"size": 3, "colour": "blue"},
    }
    # Plain create: the unknown field is silently pruned by the API server.
    cluster.kubectl("create", "--validate=false", "-f", "-", stdin=json.dumps(widget))
    stored = get_json(cluster, "widget", "w", "-n", namespace)
    assert stored["spec"] == {"size": 3}


def test_scheduler_binds_pods_only_to_the_required_region(
    cluster: LocalCluster, namespace: str
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "pinned", "namespace": namespace},
        "spec": {
            "replicas": 6,
            "selector": {"matchLabels": {"app": "pinned"}},
            "template": {
                "metadata": {"labels": {"app": "pinned"}},
                "spec": {
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {
                                                "key": REGION_LABEL,
                                                "operator": "In",
                                                "values": ["eu-west-par"],
                                            },
                                        ]
                                    }
                                ],
                            }
                        }
                    },
                    # Allowed onto GPU nodes too, so that only the region decides placement.
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.example.eu/app:1",
                            "resources": {"requests": {"cpu": "100m"}},
                        }
                    ],
                },
            },
        },
    }
    cluster.apply(deployment)
    nodes = {
        n["metadata"]["name"]: n["metadata"]["labels"][REGION_LABEL]
        for n in get_json(cluster, "nodes")["items"]
    }

    def bound_pods() -> list[dict[str, Any]] | None:
        pods = get_json(cluster, "pods", "-n", namespace, "-l", "app=pinned")["items"]
        bound = [p for p in pods if p["spec"].get("nodeName")]
        return bound if len(bound) == 6 else None

    pods = wait_for(
        bound_pods, what="6 pods bound by the scheduler (controller-manager + scheduler)"
    )
    regions = {nodes[p["spec"]["nodeName"]] for p in pods}
    assert regions == {"eu-west-par"}
    # kwok plays the kubelet: the pods really become Running.
    wait_for(
        lambda: all(
            p["status"].get("phase") == "Running"
            for p in get_json(cluster, "pods", "-n", namespace, "-l", "app=pinned")["items"]
        ),
        what="pods Running under kwok",
    )


def test_pod_requiring_a_region_without_nodes_stays_unschedulable(
    cluster: LocalCluster, namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "nowhere", "namespace": namespace},
        "spec": {
            "nodeSelector": {REGION_LABEL: "ap-south-1"},
            "containers": [{"name": "app", "image": "registry.example.eu/app:1"}],
        },
    }
    cluster.apply(pod)

    def unschedulable() -> bool:
        conditions = get_json(cluster, "pod", "nowhere", "-n", namespace)["status"].get(
            "conditions", []
        )
        return any(
            c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conditions
        )

    wait_for(unschedulable, what="PodScheduled=False/Unschedulable from the real scheduler")


def test_rbac_denies_an_unprivileged_user(cluster: LocalCluster, namespace: str) -> None:
    kubeconfig = cluster.user_kubeconfig("jane", groups=["developers"])
    denied = cluster.kubectl("get", "pods", "-n", namespace, kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert 'User "jane" cannot list resource "pods"' in denied.stderr
    # Granting a Role makes the very same call succeed: RBAC, not a broken client, said no.
    cluster.kubectl(
        "create", "role", "pod-reader", "--verb=list", "--resource=pods", "-n", namespace
    )
    cluster.kubectl(
        "create", "rolebinding", "jane-reads", "--role=pod-reader", "--user=jane", "-n", namespace
    )
    wait_for(
        lambda: (
            cluster.kubectl(
                "get", "pods", "-n", namespace, kubeconfig=kubeconfig, check=False
            ).returncode
            == 0
        ),
        what="RBAC grant to apply",
    )


def test_deleting_an_owner_garbage_collects_its_dependents(
    cluster: LocalCluster, namespace: str
) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner = get_json(cluster, "configmap", "owner", "-n", namespace)
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": namespace,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "owner",
                    "uid": owner["metadata"]["uid"],
                }
            ],
        },
    }
    cluster.apply(dependent)
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_for(
        lambda: (
            cluster.kubectl(
                "get", "configmap", "dependent", "-n", namespace, check=False
            ).returncode
            != 0
        ),
        what="the garbage collector to delete the dependent",
    )


def test_kuberay_operator_turns_a_rayjob_into_a_raycluster(
    cluster: LocalCluster, namespace: str
) -> None:
    container = {
        "name": "ray",
        "image": "rayproject/ray:2.60.0",
        "resources": {"limits": {"cpu": "1", "memory": "2Gi"}},
    }
    rayjob = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": "smoke", "namespace": namespace},
        "spec": {
            "entrypoint": "python -c 'print(1)'",
            "shutdownAfterJobFinishes": True,
            "rayClusterSpec": {
                "headGroupSpec": {
                    "rayStartParams": {},
                    "template": {"spec": {"containers": [container]}},
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "workers",
                        "replicas": 1,
                        "minReplicas": 1,
                        "maxReplicas": 1,
                        "rayStartParams": {},
                        "template": {"spec": {"containers": [container]}},
                    }
                ],
            },
        },
    }
    cluster.apply(rayjob)

    def raycluster_name() -> str | None:
        status = get_json(cluster, "rayjob", "smoke", "-n", namespace).get("status", {})
        name: str | None = status.get("rayClusterName")
        return name

    name = wait_for(raycluster_name, what="KubeRay to record a RayCluster on the RayJob")
    raycluster = get_json(cluster, "raycluster", name, "-n", namespace)
    assert raycluster["metadata"]["ownerReferences"][0]["kind"] == "RayJob"
    # KubeRay then creates the head pod, which the real scheduler binds.
    wait_for(
        lambda: any(
            p["spec"].get("nodeName")
            for p in get_json(cluster, "pods", "-n", namespace, "-l", f"ray.io/cluster={name}")[
                "items"
            ]
        ),
        what="the RayCluster's pods to be created by KubeRay and bound",
    )
