"""End-to-end fixtures: a cluster whose real node runs the product's own images."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from residency_watch import ResidencyWatch
from secrets_audit import OPERATOR_LOGS, leaks
from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.images.build import build_images
from sovereign_operator.images.references import NODE_IMAGES

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="package")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane with KubeRay and one real node (kubelet, containerd, runc, a CNI bridge,
    kube-proxy, CoreDNS) in eu-west-par, and no kwok nodes: every pod scheduled here runs. Its
    S3 store (SeaweedFS) listens on the node's bridge, where pods reach it, and Kueue holds
    queued jobs until the node's CPU quota admits them.

    Package scope (tests/e2e is a package for it): the node, its pods and the control plane
    stop after the last end-to-end test, not at the end of the session, so that they take no
    CPU from the tiers after them."""
    images = {image.name: image for image in build_images(REPO_ROOT, NODE_IMAGES)}
    archives = [Path(images[name].archive) for name in NODE_IMAGES]
    keep = os.environ.get("SOVAI_TEST_KEEP_CLUSTER") == "1"
    workdir = tmp_path_factory.mktemp("node-cluster")
    with (
        LocalCluster(
            workdir,
            nodes=(),
            real_node=True,
            node_images=archives,
            keep_workdir=keep,
            s3=True,
            kueue=True,
        ) as cluster,
        ResidencyWatch(cluster.kubeconfig) as residency,
    ):
        yield cluster
        leaked = leaks(cluster, OPERATOR_LOGS)
        assert not leaked, "credentials leaked:\n" + "\n".join(leaked)
        violations = residency.violations()
        assert not violations, "pods ran outside their allowed regions:\n" + "\n".join(violations)
