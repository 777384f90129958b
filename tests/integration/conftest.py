"""Integration fixtures: the project's CRDs and admission policies, installed once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from operator_process import get_json, wait_for

from sovereign_operator.devcluster import LocalCluster

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


@pytest.fixture(scope="session")
def crds(cluster: LocalCluster) -> LocalCluster:
    """The cluster with crds/ applied (CRDs Established, admission policies in place)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR), timeout=120)
    for name in OUR_CRDS:
        wait_for(lambda n=name: established(cluster, n), 60, f"CRD {name} to be Established")
    return cluster
