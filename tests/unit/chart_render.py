"""Render the Helm chart with the project's helm binary (helm lint / helm template), as dicts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from sovereign_operator.devcluster import find_binaries
from sovereign_operator.devcluster.binaries import find_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "sovereign-ai-operator"
KUBE_VERSION = "1.36.3"


def helm() -> Path:
    """The helm binary; a missing one fails the test (no skip), with how to get it."""
    binaries, missing = find_binaries()
    assert "helm" not in missing, "helm not found: run `make control-plane` (hack/versions.env)"
    return binaries["helm"]


def required_tool(name: str) -> Path:
    """A tool that hack/build-control-plane.sh builds (kube-score, argocd-health, ...); a
    missing one fails the test (no skip), with how to get it."""
    found = find_tool(name)
    assert found is not None, (
        f"{name} not found: run `make control-plane` or `hack/build-control-plane.sh {name}` "
        "(needs Go; versions in hack/versions.env), or put it in KUBEBUILDER_ASSETS"
    )
    return found


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm()), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def value_args(values: dict[str, Any] | None) -> list[str]:
    """Values as --set-json flags, one per top-level key (types survive, unlike --set)."""
    return [
        arg
        for key, value in (values or {}).items()
        for arg in ("--set-json", f"{key}={json.dumps(value)}")
    ]


def template(
    values: dict[str, Any] | None = None,
    namespace: str = "sovai-system",
    api_versions: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """`helm template` of the chart, every rendered document (hooks included) as a dict.
    ``api_versions``: what the cluster's discovery would add ("group/version/Kind"), which
    `helm install` reads from the cluster and `helm template` only from flags."""
    result = run_helm(
        "template",
        "rel",
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        *(arg for version in api_versions for arg in ("--api-versions", version)),
        *value_args(values),
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def template_error(values: dict[str, Any]) -> str:
    """`helm template` that must fail: its error output."""
    result = run_helm(
        "template",
        "rel",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        *value_args(values),
        check=False,
    )
    assert result.returncode != 0, f"helm template accepted {values}"
    return result.stderr


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
