"""Install the Helm chart into a LocalCluster, and act as the chart's ServiceAccount.

The operator authenticates with a token from the TokenRequest API (`kubectl create token`),
written into a kubeconfig, so every call it makes is authorised by the chart's RBAC alone.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.identity import service_account_kubeconfig

from .operator_process import OperatorProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "sovereign-ai-operator"
# What the API server answers when RBAC refuses a call: `... is forbidden: User "..." cannot
# patch resource "finetunejobs/status" ...`. Any such line in the operator's log is a missing rule.
# The quotes come escaped once or twice (JSON log lines quoting a JSON response body).
FORBIDDEN = re.compile(r'cannot (\w+) resource [\\"]+([\w./-]+)[\\"]+')


def helm(cluster: LocalCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the project's helm against the cluster as its admin."""
    argv = [str(cluster.binaries["helm"]), f"--kubeconfig={cluster.kubeconfig}", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def value_args(values: dict[str, Any]) -> list[str]:
    return [a for k, v in values.items() for a in ("--set-json", f"{k}={json.dumps(v)}")]


def install(
    cluster: LocalCluster, release: str, namespace: str, values: dict[str, Any], upgrade: bool
) -> subprocess.CompletedProcess[str]:
    """`helm install` (or `helm upgrade`) of the chart from this checkout, with ``--wait`` as
    the docs say: the policy hook then runs once its CRD is established (without it, a busy API
    server can still be missing the new kind from discovery when the hook is built)."""
    verb = ["upgrade"] if upgrade else ["install", "--create-namespace"]
    verb.append("--wait")
    return helm(cluster, *verb, release, str(CHART), "-n", namespace, *value_args(values))


def token_kubeconfig(
    cluster: LocalCluster, service_account: str, namespace: str, path: Path
) -> Path:
    """A kubeconfig that authenticates as ``namespace/service_account`` with a bound token."""
    return service_account_kubeconfig(cluster, service_account, namespace, path, duration="2h")


def forbidden_calls(log_text: str) -> set[tuple[str, str]]:
    """(verb, resource) of every call RBAC refused, from the operator's log."""
    return set(FORBIDDEN.findall(log_text))


# -- fixtures: import them into a test module to run its operator as the chart's SA ------------

RBAC_RELEASE = "sovai-rbac"
RBAC_NAMESPACE = "sovai-rbac"
# Only the identity: the session's `crds` fixture already installed CRDs and admission policies.
RBAC_VALUES: dict[str, Any] = {
    "crds": {"enabled": False},
    "admissionPolicy": {"enabled": False},
    "sovereigntyPolicy": {"create": False},
}


@pytest.fixture(scope="package")
def chart_service_account(crds: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart installed (RBAC, ServiceAccount, Deployment); a kubeconfig acting as its SA."""
    helm(
        crds,
        "upgrade",
        "--install",
        "--create-namespace",
        RBAC_RELEASE,
        str(CHART),
        "-n",
        RBAC_NAMESPACE,
        *value_args(RBAC_VALUES),
    )
    path = tmp_path_factory.mktemp("chart-sa") / "operator.kubeconfig"
    return token_kubeconfig(crds, f"{RBAC_RELEASE}-sovereign-ai-operator", RBAC_NAMESPACE, path)


@pytest.fixture(autouse=True)
def operator_as_chart_service_account(
    chart_service_account: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[OperatorProcess]]:
    """Every OperatorProcess started with the admin kubeconfig runs as the chart's SA instead;
    afterwards its log must hold no call that RBAC refused (even one the test did not notice).
    A process given another kubeconfig on purpose is left alone."""
    started: list[OperatorProcess] = []
    original = OperatorProcess.start

    def start(self: OperatorProcess, timeout: float = 60.0) -> OperatorProcess:
        if self.env["KUBECONFIG"] == str(self.cluster.kubeconfig):
            self.env["KUBECONFIG"] = str(chart_service_account)
            started.append(self)
        return original(self, timeout)

    monkeypatch.setattr(OperatorProcess, "start", start)
    yield started
    for process in started:
        refused = forbidden_calls(process.log_text())
        assert refused == set(), f"RBAC refused {refused}:\n{process.log_tail()}"
