"""kube-score, a manifest linter, on the rendered chart and on the manifests the operator builds.

Every CRITICAL or WARNING finding fails, except those that kube_score_exceptions.yaml lists with
a reason; an exception that matches no finding fails too, so the list cannot go stale.

kube-score cannot score a RayJob (a custom resource), so its pod templates are scored as the
objects KubeRay makes of them: the head and the worker template as Pods, the submitter template
as a Job. What KubeRay adds to them (its own probes, volumes, environment) is not scored.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_render import CHART, REPO_ROOT, required_tool, template

from sovereign_operator.api.v1alpha1.finetunejob import FineTuneJobSpec
from sovereign_operator.api.v1alpha1.modeldeployment import ModelDeploymentSpec
from sovereign_operator.api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from sovereign_operator.builders.context import BuildConfig, Owner, Residency
from sovereign_operator.builders.network import build_job_network_policy
from sovereign_operator.builders.rayjob import build_rayjob
from sovereign_operator.builders.serving import ServedModel, ServingConfig, build_deployment
from sovereign_operator.builders.serving_children import (
    build_hpa,
    build_network_policy,
    build_pdb,
    build_service,
)
from sovereign_operator.devcluster.binaries import read_versions

EXCEPTIONS_FILE = Path(__file__).with_name("kube_score_exceptions.yaml")
# kube-score grades: 1 critical, 5 warning, 7 almost OK, 10 OK.
FAILING_GRADE = 5

RESIDENCY = Residency("eu-only", "topology.kubernetes.io/region", ("eu-west-par", "eu-central-fra"))
BUILD = BuildConfig(runtime_image="registry.sovereign-ai.eu/sovereign-ai/runtime:0.1.0")
SERVING = ServingConfig(
    vllm_image="registry.sovereign-ai.eu/vllm/vllm-openai:v0.11.0",
    server_image="registry.sovereign-ai.eu/sovereign-ai/runtime:0.1.0",
)
POLICY = SovereigntyPolicySpec.model_validate(
    {
        "allowedRegions": ["eu-west-par", "eu-central-fra"],
        "egress": {"allowedCIDRs": ["10.0.0.0/8"]},
    }
)


@dataclass(frozen=True)
class Finding:
    obj: str  # Kind/name
    check: str
    grade: int
    container: str
    summary: str

    def __str__(self) -> str:
        where = f" ({self.container})" if self.container else ""
        return f"{self.obj}{where}: [{self.check}] {self.summary}"


@dataclass(frozen=True)
class Excepted:
    check: str
    summary: str
    objects: tuple[str, ...]
    reason: str

    def matches(self, finding: Finding) -> bool:
        return (
            finding.check == self.check
            and finding.summary == self.summary
            and any(fnmatch.fnmatchcase(finding.obj, pattern) for pattern in self.objects)
        )


def load_exceptions() -> list[Excepted]:
    entries = yaml.safe_load(EXCEPTIONS_FILE.read_text())
    exceptions = []
    for entry in entries:
        assert set(entry) == {"check", "summary", "objects", "reason"}, entry
        assert entry["reason"].strip(), f"an exception without a reason: {entry}"
        exceptions.append(
            Excepted(entry["check"], entry["summary"], tuple(entry["objects"]), entry["reason"])
        )
    return exceptions


EXCEPTIONS = load_exceptions()


def kube_score() -> Path:
    return required_tool("kube-score")


def kubernetes_minor() -> str:
    """The Kubernetes version kube-score checks against: the one the project runs (v1.N)."""
    major, minor = read_versions(REPO_ROOT)["KUBERNETES_VERSION"].split(".")[:2]
    return f"{major}.{minor}"


# -- the manifests --------------------------------------------------------------------------


def chart(values: dict[str, Any] | None, namespace: str) -> list[dict[str, Any]]:
    return template(values, namespace=namespace)


def serving(md: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    """Every child of a ModelDeployment named chat, as the operator builds them."""
    spec = ModelDeploymentSpec.model_validate({"model": {"uri": "models:/chat-model/3"}, **md})
    owner = Owner(name="chat", namespace=namespace, uid="uid-chat", kind="ModelDeployment")
    model = ServedModel("models:/chat-model/3")
    children = [
        build_deployment(spec, owner, RESIDENCY, model, BUILD, SERVING),
        build_service(spec, owner),
        build_hpa(spec, owner),
        build_pdb(spec, owner),
        build_network_policy(spec, owner, POLICY),
    ]
    return [child for child in children if child is not None]


def rayjob_pods(namespace: str) -> list[dict[str, Any]]:
    """The pod templates of a FineTuneJob named ft's RayJob, as the objects KubeRay makes, and
    the NetworkPolicy the operator gives them."""
    spec = FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": "hf://mistralai/tiny", "secretRef": {"name": "hf"}},
            "dataset": {"trainingUri": "pvc://data/train.jsonl"},
            "resources": {"workers": 2, "gpusPerWorker": 1},
        }
    )
    owner = Owner(name="ft", namespace=namespace, uid="uid-ft")
    rayjob = build_rayjob(spec, owner, BUILD, RESIDENCY, job_config="{}")["spec"]
    cluster = rayjob["rayClusterSpec"]
    pods = [
        ("ft-head", cluster["headGroupSpec"]["template"]),
        ("ft-workers", cluster["workerGroupSpecs"][0]["template"]),
    ]
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, **pod["metadata"]},
            "spec": pod["spec"],
        }
        for name, pod in pods
    ]
    objects.append(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "ft", "namespace": namespace},
            "spec": {"backoffLimit": 0, "template": rayjob["submitterPodTemplate"]},
        }
    )
    objects.append(build_job_network_policy(owner, POLICY))
    return objects


def chart_config() -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    return dict(values["config"])


# Each case in a namespace of its own, so that no case's Service or NetworkPolicy selects
# another case's pods.
CASES: dict[str, Callable[[str], list[dict[str, Any]]]] = {
    "chart-defaults": lambda ns: chart(None, ns),
    "chart-peering": lambda ns: chart({"config": {**chart_config(), "replicas": 2}}, ns),
    "serving-one-replica": lambda ns: serving({}, ns),
    "serving-vllm-gpus": lambda ns: serving(
        {"replicas": 2, "resources": {"gpusPerReplica": 1, "cpu": "8", "memory": "64Gi"}}, ns
    ),
    "serving-autoscaled": lambda ns: serving(
        {"runtime": "transformers", "autoscaling": {"minReplicas": 2, "maxReplicas": 4}}, ns
    ),
    "rayjob": rayjob_pods,
}


# -- scoring --------------------------------------------------------------------------------


def score(manifests: list[dict[str, Any]]) -> list[Finding]:
    """kube-score's failing findings (WARNING and CRITICAL) on these manifests."""
    result = subprocess.run(
        [
            str(kube_score()),
            "score",
            "--kubernetes-version",
            kubernetes_minor(),
            "--output-format",
            "json",
            "-",
        ],
        input=yaml.safe_dump_all(manifests),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Exit code 1 means "findings"; only unreadable output is an error.
    try:
        scored = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"kube-score failed:\n{result.stdout}\n{result.stderr}") from None
    findings = []
    for obj in scored:
        name = f"{obj['type_meta']['kind']}/{obj['object_meta']['name']}"
        for check in obj["checks"]:
            if check["skipped"] or check["grade"] > FAILING_GRADE:
                continue
            for comment in check["comments"]:
                findings.append(
                    Finding(
                        name,
                        check["check"]["id"],
                        check["grade"],
                        comment["path"],
                        comment["summary"],
                    )
                )
    return findings


@cache
def findings_of(case: str) -> tuple[Finding, ...]:
    manifests = CASES[case](case)
    assert manifests, f"case {case} has nothing to score"
    return tuple(score(manifests))


@pytest.mark.parametrize("case", list(CASES))
def test_kube_score_finds_nothing_but_the_written_exceptions(case: str) -> None:
    unexcepted = [f for f in findings_of(case) if not any(e.matches(f) for e in EXCEPTIONS)]
    assert unexcepted == [], "kube-score findings without an exception:\n" + "\n".join(
        map(str, unexcepted)
    )


def test_every_exception_still_matches_a_finding() -> None:
    findings = [f for case in CASES for f in findings_of(case)]
    unused = [e for e in EXCEPTIONS if not any(e.matches(f) for f in findings)]
    assert unused == [], f"exceptions that match no finding any more: {unused}"


def test_the_lint_fails_on_a_finding_without_exception() -> None:
    # The check itself: a container without resources is a CRITICAL finding none excepts.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bare", "namespace": "bare"},
        "spec": {"containers": [{"name": "c", "image": "registry.sovereign-ai.eu/x:1"}]},
    }
    findings = score([pod])
    assert Finding("Pod/bare", "container-resources", 1, "c", "CPU limit is not set") in findings
    assert not all(any(e.matches(f) for e in EXCEPTIONS) for f in findings)


def test_docs_give_every_exception_and_its_reason() -> None:
    docs = " ".join((REPO_ROOT / "docs" / "helm.md").read_text().split())
    for exception in EXCEPTIONS:
        assert f"`{exception.check}`" in docs, exception.check
        assert exception.summary in docs, exception.summary
        assert " ".join(exception.reason.split()) in docs, exception.reason
