"""`helm install`, `kubectl apply -f examples/`, `helm upgrade`, `helm uninstall`, as a new user
would, on a control plane of its own (uninstalling removes admission policies that the shared
session cluster's other tests rely on).

There is no registry here, so the chart's Deployment runs as a kwok pod that executes nothing;
the operator itself runs as a process with the Deployment's own SOVAI_* environment and the
chart ServiceAccount's token: exactly the chart's settings and permissions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sovereign_operator.devcluster import LocalCluster

from .chart_identity import forbidden_calls, helm, install, token_kubeconfig
from .operator_process import OperatorProcess, get_json, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RELEASE = "sovai"
NAMESPACE = "sovereign-ai-system"
FULLNAME = "sovai-sovereign-ai-operator"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KEPT_CRDS = {
    "finetunejobs.sovereign-ai.eu",
    "modeldeployments.sovereign-ai.eu",
    "sovereigntypolicies.sovereign-ai.eu",
}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane of this module's own, with KubeRay (its RayJob CRD)."""
    with LocalCluster(tmp_path_factory.mktemp("helm-cluster")) as cluster:
        yield cluster


def deployment(cluster: LocalCluster) -> dict[str, Any]:
    found: dict[str, Any] = get_json(cluster, "deployment", FULLNAME, "-n", NAMESPACE)
    return found


def container_env(cluster: LocalCluster) -> dict[str, str]:
    [container] = deployment(cluster)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def ftj_phase(cluster: LocalCluster, namespace: str, name: str) -> str | None:
    obj = get_json(cluster, "finetunejob", name, "-n", namespace) or {}
    phase: str | None = (obj.get("status") or {}).get("phase")
    return phase


def test_install_apply_examples_upgrade_uninstall_keeps_crds(
    fresh: LocalCluster, tmp_path: Path
) -> None:
    # -- install ---------------------------------------------------------------------------
    # The chart's default policy declares no object store and no Ray cluster (it cannot know
    # them): a platform engineer declares theirs in the values, here the sample policy's.
    sample = yaml.safe_load((EXAMPLES / "sovereigntypolicy-eu.yaml").read_text())
    places = {"sovereigntyPolicy": {"spec": sample["spec"]}}
    result = install(fresh, RELEASE, NAMESPACE, places, upgrade=False)
    assert "kubectl get sovereigntypolicy eu-only" in result.stdout  # NOTES.txt
    crds = {c["metadata"]["name"]: c for c in get_json(fresh, "crd")["items"]}
    for name in KEPT_CRDS:
        assert crds[name]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    policies = {
        p["metadata"]["name"] for p in get_json(fresh, "validatingadmissionpolicy")["items"]
    }
    assert policies == {"finetunejobs.sovereign-ai.eu", "modeldeployments.sovereign-ai.eu"}
    assert get_json(fresh, "sovereigntypolicy", "eu-only") is not None  # the post-install hook
    spec = deployment(fresh)["spec"]
    assert spec["strategy"] == {"type": "Recreate"}
    assert container_env(fresh)["SOVAI_DEFAULT_POLICY"] == "eu-only"

    # -- the operator, with the Deployment's settings and the ServiceAccount's token ---------
    kubeconfig = token_kubeconfig(fresh, FULLNAME, NAMESPACE, tmp_path / "sa.kubeconfig")
    settings = {k: v for k, v in container_env(fresh).items() if k.startswith("SOVAI_")}
    # Ports are the only change: the process shares this machine with other tests.
    for port in ("SOVAI_HEALTH_PORT", "SOVAI_METRICS_PORT"):
        settings.pop(port)
    fresh.kubectl("create", "namespace", "demo")
    process = OperatorProcess(
        fresh, tmp_path, namespaces=[], env={**settings, "KUBECONFIG": str(kubeconfig)}
    )
    process.env.pop("SOVAI_NAMESPACES")  # the chart's default: the whole cluster
    with process:
        # A new user's next step: the examples, with no other step (the policy came with the
        # chart; the sample policy among the examples is the same one).
        applied = fresh.kubectl("apply", "-n", "demo", "-f", str(EXAMPLES))
        assert "finetunejob.sovereign-ai.eu/support-assistant-lora created" in applied.stdout
        wait_for(
            lambda: ftj_phase(fresh, "demo", "support-assistant-lora") in ("Queued", "Running"),
            120,
            "example support-assistant-lora to be admitted by the operator",
            on_timeout=process.log_tail,
        )
        rayjobs = get_json(fresh, "rayjobs.ray.io", "-n", "demo")["items"]
        assert "support-assistant-lora" in {r["metadata"]["name"] for r in rayjobs}
        # An example that breaks the policy never gets stored.
        denied = fresh.kubectl(
            "apply",
            "-n",
            "demo",
            "-f",
            str(EXAMPLES / "invalid" / "ftj-region-not-allowed.yaml"),
            check=False,
        )
        assert denied.returncode != 0
        assert "ValidatingAdmissionPolicy" in denied.stderr
    assert forbidden_calls(process.log_text()) == set(), process.log_tail()

    # -- upgrade with changed values --------------------------------------------------------
    before = deployment(fresh)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    install(
        fresh,
        RELEASE,
        NAMESPACE,
        {
            "config": {"logLevel": "DEBUG", "replicas": 2},
            "resources": {"limits": {"memory": "1Gi"}},
        },
        upgrade=True,
    )
    spec = deployment(fresh)["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["template"]["metadata"]["annotations"]["checksum/config"] != before
    assert spec["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "1Gi"
    env = container_env(fresh)
    assert env["SOVAI_LOG_LEVEL"] == "DEBUG"
    assert env["SOVAI_REPLICAS"] == "2"
    assert get_json(fresh, "clusterkopfpeering", "sovereign-ai-operator") is not None
    history = json.loads(helm(fresh, "history", RELEASE, "-n", NAMESPACE, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2]

    # -- uninstall: the CRDs, and so the users' custom resources, stay ------------------------
    helm(fresh, "uninstall", RELEASE, "-n", NAMESPACE, "--wait")
    assert get_json(fresh, "deployment", FULLNAME, "-n", NAMESPACE) is None
    assert get_json(fresh, "clusterrole", FULLNAME) is None
    assert get_json(fresh, "serviceaccount", FULLNAME, "-n", NAMESPACE) is None
    assert get_json(fresh, "validatingadmissionpolicy", "finetunejobs.sovereign-ai.eu") is None
    remaining = {c["metadata"]["name"] for c in get_json(fresh, "crd")["items"]}
    assert remaining >= KEPT_CRDS
    assert get_json(fresh, "finetunejob", "support-assistant-lora", "-n", "demo") is not None
