"""The local cluster's Argo CD (devcluster/argocd.py) on the integration control plane: it syncs
a folder from its git server, applies the chart's health script to a FineTuneJob that no
operator has picked up, and prunes what a later commit removes.

The whole GitOps story (the chart, the operator as a pod, a job that trains) is
tests/e2e/test_gitops.py; this is the quick check that Argo CD itself runs here, for the tier
that has no real node. No operator runs in this module, so the job never gets a status.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.argocd import NAMESPACE, ArgoCD
from sovereign_operator.devcluster.processes import tail

from .operator_process import finetunejob, get_json, setup_namespace, wait_for

pytestmark = pytest.mark.integration

CONFIG: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "from-git"},
    "data": {"note": "removed by the second commit"},
}


@pytest.fixture(scope="module")
def argocd(crds: LocalCluster) -> Iterator[ArgoCD]:
    with ArgoCD(crds) as running:
        # The controller's metrics server binds 0.0.0.0 (no flag in Argo CD 3.3): its port is
        # closed to every interface but loopback while it runs.
        assert len(running.fenced()) == 1, running.fenced()
        yield running
    assert not running.leftovers(), running.leftovers()


def application(name: str, repo_url: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "project": "default",
            "source": {"repoURL": repo_url, "targetRevision": "main", "path": "team"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": namespace},
            "syncPolicy": {"automated": {"prune": True}},
        },
    }


def test_argocd_syncs_from_git_with_the_charts_health_script(
    crds: LocalCluster, argocd: ArgoCD, namespace: str
) -> None:
    setup_namespace(crds, namespace)
    job = finetunejob("from-git", namespace, suspend=True)
    del job["metadata"]["namespace"]  # the Application's destination says where
    repo = argocd.repository("team")
    # JSON is YAML: the files are what a user would commit.
    repo.write("team/job.yaml", json.dumps(job))
    repo.write("team/config.yaml", json.dumps(CONFIG))
    first = repo.commit("a job and a config map")
    crds.apply(application(namespace, repo.url, namespace))
    seen: dict[str, Any] = {}

    def app_is(revision: str, kinds: set[str]) -> bool:
        app = get_json(crds, "application", namespace, "-n", NAMESPACE) or {}
        seen["app"] = app
        status = app.get("status") or {}
        listed = {r["kind"] for r in status.get("resources") or []}
        return (status.get("sync") or {}).get("status") == "Synced" and (
            (status.get("sync") or {}).get("revision"),
            listed,
        ) == (revision, kinds)

    logs = argocd.component_logs()["argocd-application-controller"]
    wait_for(lambda: app_is(first, {"FineTuneJob", "ConfigMap"}), 120,
             f"the Application synced to {first}", on_timeout=lambda: tail(logs))  # fmt: skip
    assert get_json(crds, "finetunejob", "from-git", "-n", namespace)
    [shown] = [r for r in seen["app"]["status"]["resources"] if r["kind"] == "FineTuneJob"]
    # The chart's script, as argocd-cm holds it: no status yet, so the operator is awaited.
    assert shown["health"] == {
        "status": "Progressing",
        "message": "Waiting for the operator to pick up the job",
    }

    repo.remove("team/config.yaml")
    second = repo.commit("drop the config map")
    crds.kubectl("annotate", "application", namespace, "-n", NAMESPACE,
                 "argocd.argoproj.io/refresh=normal")  # fmt: skip
    wait_for(lambda: app_is(second, {"FineTuneJob"}), 120,
             f"the Application synced to {second}", on_timeout=lambda: tail(logs))  # fmt: skip
    assert get_json(crds, "configmap", "from-git", "-n", namespace) is None
    crds.kubectl("delete", "application", namespace, "-n", NAMESPACE)
