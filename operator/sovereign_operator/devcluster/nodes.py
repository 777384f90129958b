"""Fake GPU and CPU nodes for kwok, in two EU regions and one non-EU region.

Pure builders: they return Node manifests; the cluster applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"
# The taint GPU node pools usually carry, so that only pods asking for GPUs land there.
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
POOL_LABEL = "sovereign-ai.eu/node-pool"


@dataclass(frozen=True)
class FakeNode:
    region: str
    zone: str
    pool: str  # "gpu" or "cpu"
    index: int
    gpu_product: str | None = None
    gpus: int = 0

    @property
    def name(self) -> str:
        return f"kwok-{self.region}-{self.pool}-{self.index}"


DEFAULT_NODES: tuple[FakeNode, ...] = (
    FakeNode("eu-west-par", "eu-west-par-a", "gpu", 0, "NVIDIA-H100-80GB-HBM3", 8),
    FakeNode("eu-west-par", "eu-west-par-b", "gpu", 1, "NVIDIA-H100-80GB-HBM3", 8),
    FakeNode("eu-west-par", "eu-west-par-a", "cpu", 0),
    FakeNode("eu-central-fra", "eu-central-fra-a", "gpu", 0, "NVIDIA-H200", 8),
    FakeNode("eu-central-fra", "eu-central-fra-a", "cpu", 0),
    FakeNode("us-east-1", "us-east-1a", "gpu", 0, "NVIDIA-H100-80GB-HBM3", 8),
    FakeNode("us-east-1", "us-east-1a", "cpu", 0),
)


def build_node(node: FakeNode) -> dict[str, Any]:
    """A Node that kwok manages (annotation ``kwok.x-k8s.io/node: fake``)."""
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        REGION_LABEL: node.region,
        ZONE_LABEL: node.zone,
        POOL_LABEL: node.pool,
    }
    capacity = {"cpu": "64", "memory": "512Gi", "pods": "110", "ephemeral-storage": "1Ti"}
    spec: dict[str, Any] = {}
    if node.gpu_product:
        labels[GPU_PRODUCT_LABEL] = node.gpu_product
        capacity[GPU_RESOURCE] = str(node.gpus)
        spec["taints"] = [dict(GPU_TAINT)]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": spec,
        "status": {
            "allocatable": dict(capacity),
            "capacity": dict(capacity),
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
            },
        },
    }
