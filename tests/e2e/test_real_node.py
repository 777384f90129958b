"""The real node: pods of the product's own images run, on the node the scheduler chose."""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.binaries import read_versions
from sovereign_operator.devcluster.node_config import REAL_NODE_LABEL
from sovereign_operator.devcluster.nodes import REGION_LABEL
from sovereign_operator.images.references import OPERATOR_IMAGE

pytestmark = pytest.mark.e2e
REPO_ROOT = Path(__file__).resolve().parents[2]


def pod_json(cluster: LocalCluster, name: str, namespace: str) -> dict[str, Any]:
    result = cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json")
    pod: dict[str, Any] = json.loads(result.stdout)
    return pod


def wait_for_phase(cluster: LocalCluster, name: str, namespace: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    phase = ""
    while time.monotonic() < deadline:
        phase = str(pod_json(cluster, name, namespace).get("status", {}).get("phase", ""))
        if phase in ("Succeeded", "Failed"):
            return phase
        time.sleep(0.5)
    describe = cluster.kubectl("describe", "pod", name, "-n", namespace, check=False).stdout
    state = phase or "unscheduled"
    raise AssertionError(f"pod {name} still {state} after {timeout} s:\n{describe}")


def test_real_node_is_ready_in_its_region(node_cluster: LocalCluster) -> None:
    assert node_cluster.real_node is not None
    node = json.loads(
        node_cluster.kubectl("get", "node", node_cluster.real_node.name, "-o", "json").stdout
    )
    labels = node["metadata"]["labels"]
    assert labels[REGION_LABEL] == "eu-west-par"
    assert labels[REAL_NODE_LABEL] == "true"
    assert "nvidia.com/gpu" not in node["status"]["capacity"]
    info = node["status"]["nodeInfo"]
    versions = read_versions(REPO_ROOT)
    assert info["containerRuntimeVersion"] == f"containerd://{versions['CONTAINERD_VERSION'][1:]}"
    assert info["kubeletVersion"] == versions["KUBERNETES_VERSION"]


def run_pod(cluster: LocalCluster, name: str, container: dict[str, Any], **spec: Any) -> str:
    """Run a pod of one container to completion in a new namespace; return its log."""
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", namespace)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }
    cluster.apply(pod)
    phase = wait_for_phase(cluster, name, namespace, 120)
    logs = cluster.kubectl("logs", name, "-n", namespace).stdout
    assert phase == "Succeeded", logs
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    return logs


IN_CLUSTER_PROBE = """
import json, socket, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
address = socket.gethostbyname("kubernetes.default.svc.cluster.local")
context = ssl.create_default_context(cafile=sa + "ca.crt")
request = urllib.request.Request(
    "https://kubernetes.default.svc/version",
    headers={"Authorization": "Bearer " + open(sa + "token").read()},
)
version = json.load(urllib.request.urlopen(request, context=context, timeout=10))["gitVersion"]
try:
    socket.gethostbyname("pypi.org")
    outside = "resolved"
except OSError:
    outside = "refused"
print(address, version, outside)
"""


def test_pods_reach_the_api_server_by_its_service_name(node_cluster: LocalCluster) -> None:
    """CoreDNS answers the cluster's names (and nothing outside it), kube-proxy turns the
    kubernetes Service into the API server on the node's bridge, and a ServiceAccount token
    authenticates: what the operator needs to run as a pod."""
    logs = run_pod(
        node_cluster,
        "in-cluster",
        {
            "name": "probe",
            "image": OPERATOR_IMAGE,
            "imagePullPolicy": "Never",
            "command": ["python", "-c", IN_CLUSTER_PROBE],
        },
    )
    versions = read_versions(REPO_ROOT)
    assert logs.split() == ["10.96.0.1", versions["KUBERNETES_VERSION"], "refused"]


def test_operator_image_runs_in_a_pod(node_cluster: LocalCluster) -> None:
    """The chart's security context (non-root, read-only root, no capabilities) on the real
    runtime: the image's entrypoint answers --help, and its log comes back through kubelet."""
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    node_cluster.kubectl("create", "namespace", namespace)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "operator-help", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "operator",
                    "image": OPERATOR_IMAGE,
                    "imagePullPolicy": "Never",
                    "args": ["--help"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    node_cluster.apply(pod)
    assert wait_for_phase(node_cluster, "operator-help", namespace, 120) == "Succeeded"
    ran = pod_json(node_cluster, "operator-help", namespace)
    assert node_cluster.real_node is not None
    assert ran["spec"]["nodeName"] == node_cluster.real_node.name
    assert ipaddress.ip_address(ran["status"]["podIP"]) in node_cluster.real_node.layout.subnet
    logs = node_cluster.kubectl("logs", "operator-help", "-n", namespace).stdout
    assert "usage: python -m sovereign_operator" in logs
    assert "SOVAI_RUNTIME_IMAGE" in logs
    node_cluster.kubectl("delete", "namespace", namespace, "--wait=false")
