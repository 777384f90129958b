"""Integration fixtures: the local control plane and the project's CRDs and admission policies,
started and installed once for the integration tier."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from residency_watch import ResidencyWatch
from secrets_audit import OPERATOR_LOGS, leaks
from sovereign_operator.devcluster import LocalCluster

from .operator_process import get_json, wait_for

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
OUR_CRDS = (
    "finetunejobs.sovereign-ai.eu",
    "modeldeployments.sovereign-ai.eu",
    "sovereigntypolicies.sovereign-ai.eu",
)


def established(cluster: LocalCluster, name: str) -> bool:
    crd = get_json(cluster, "crd", name) or {}
    return any(
        c.get("type") == "Established" and c.get("status") == "True"
        for c in (crd.get("status") or {}).get("conditions") or []
    )


@pytest.fixture(scope="package")
def crds(cluster: LocalCluster) -> LocalCluster:
    """The cluster with crds/ applied (CRDs Established, admission policies in place)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR), timeout=120)
    for name in OUR_CRDS:
        wait_for(partial(established, cluster, name), 60, f"CRD {name} to be Established")
    wait_for(lambda: admission_configured(cluster), 120, "the admission policies to find paramKind")
    return cluster


def admission_configured(cluster: LocalCluster) -> bool:
    """The API server resolves a new paramKind some seconds after its CRD is Established; until
    then every create is refused with "failed to configure policy". A server-side dry run
    tells when that is over (an answer that allows or denies the probe means it is
    configured)."""
    probe = {
        "apiVersion": "sovereign-ai.eu/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "admission-probe", "namespace": "default"},
        "spec": {
            "baseModel": {"uri": "hf://probe/probe"},
            "dataset": {"trainingUri": "s3://probe-bucket/probe.jsonl"},
        },
    }
    result = cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", stdin=json.dumps(probe), check=False
    )
    # Just after the CRD is Established, the API server may not serve the kind yet either
    # (503 ServiceUnavailable "... not found. There can be a delay ...").
    not_yet = ("failed to configure policy", "ServiceUnavailable", "There can be a delay")
    return not any(text in result.stderr for text in not_yet)


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok, KubeRay,
    Kueue) and its S3-compatible store (SeaweedFS), for the integration tests only (package
    scope: it stops after the last of them).

    Start failures raise with the failing component's log; nothing is skipped.
    ``SOVAI_TEST_KEEP_CLUSTER=1`` keeps its folder (logs, kubeconfig) after the run.
    """
    workdir = tmp_path_factory.mktemp("cluster")
    keep = os.environ.get("SOVAI_TEST_KEEP_CLUSTER") == "1"
    with (
        LocalCluster(workdir, keep_workdir=keep, s3=True, kueue=True) as local,
        ResidencyWatch(local.kubeconfig) as residency,
    ):
        yield local
        # Every pod the operator's children made in this tier, wherever it was bound.
        leaked = leaks(local, OPERATOR_LOGS)
        assert not leaked, "credentials leaked:\n" + "\n".join(leaked)
        violations = residency.violations()
        assert not violations, "pods ran outside their allowed regions:\n" + "\n".join(violations)


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
