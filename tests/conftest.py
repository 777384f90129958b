"""Shared fixtures. The local control plane starts once per session, only when a test needs it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sovereign_operator.devcluster import LocalCluster

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok, KubeRay).

    Start failures raise with the failing component's log; nothing is skipped.
    ``SOVAI_TEST_KEEP_CLUSTER=1`` keeps its folder (logs, kubeconfig) after the run.
    """
    workdir = tmp_path_factory.mktemp("cluster")
    keep = os.environ.get("SOVAI_TEST_KEEP_CLUSTER") == "1"
    with LocalCluster(workdir, keep_workdir=keep) as local:
        yield local


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
