"""The API installed into a real kube-apiserver and used with kubectl, as a user would.

Every schema rule, CEL rule and admission check is exercised here; removing any of them makes
one of these tests fail.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sovereign_operator.api.v1alpha1 import (
    FineTuneJobSpec,
    ModelDeploymentSpec,
    SovereigntyPolicySpec,
)
from sovereign_operator.api.v1alpha1.finetunejob import Method
from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.policy import selects_namespace, uri_allowed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
EXAMPLES = ROOT / "examples"
SAMPLE_POLICY = EXAMPLES / "sovereigntypolicy-eu.yaml"
CRD_NAMES = [
    "finetunejobs.sovereign-ai.eu",
    "modeldeployments.sovereign-ai.eu",
    "sovereigntypolicies.sovereign-ai.eu",
]
SAMPLE_SPEC: dict[str, Any] = yaml.safe_load(SAMPLE_POLICY.read_text())["spec"]
MINIMAL_FTJ = {
    "baseModel": {"uri": "hf://mistralai/Mistral-7B-v0.3"},
    "dataset": {"trainingUri": "s3://eu-datasets-par/train.jsonl"},
}


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def document(kind: str, name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "sovereign-ai.eu/v1alpha1",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def ftj(name: str, **spec: Any) -> str:
    return document("FineTuneJob", name, MINIMAL_FTJ | spec)


def create(
    cluster: LocalCluster, text: str, namespace: str | None = None, *extra: str
) -> subprocess.CompletedProcess[str]:
    ns = ["-n", namespace] if namespace else []
    return cluster.kubectl("create", *ns, *extra, "-f", "-", stdin=text, check=False)


def denied(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, f"accepted, but should have been rejected:\n{result.stdout}"
    return result.stderr


def get(cluster: LocalCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def region_probe_denied(cluster: LocalCluster, namespace: str) -> bool:
    """Whether admission already enforces the sample policy (policies and params synced)."""
    probe = ftj(f"probe-{uuid.uuid4().hex[:6]}", placement={"regions": ["us-east-1"]})
    result = create(cluster, probe, namespace, "--dry-run=server")
    return result.returncode != 0 and "not allowed by SovereigntyPolicy" in result.stderr


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """crds/ and the sample EU policy installed, admission enforcing."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    for name in CRD_NAMES:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    cluster.kubectl("apply", "--server-side", "-f", str(SAMPLE_POLICY))
    probe_namespace = f"api-probe-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", probe_namespace)
    wait_for(lambda: region_probe_denied(cluster, probe_namespace), "admission to enforce policy")
    yield cluster
    cluster.kubectl("delete", "-f", str(SAMPLE_POLICY), "--wait=false", check=False)
    cluster.kubectl("delete", "namespace", probe_namespace, "--wait=false", check=False)


@pytest.fixture
def policy(api: LocalCluster) -> Iterator[Callable[[str, dict[str, Any]], None]]:
    """Create extra SovereigntyPolicies for one test; deleted afterwards."""
    created: list[str] = []

    def make(name: str, spec: dict[str, Any]) -> None:
        api.kubectl("create", "-f", "-", stdin=document("SovereigntyPolicy", name, spec))
        created.append(name)

    yield make
    for name in created:
        api.kubectl("delete", "sovpol", name, "--wait=false", check=False)


VALID = sorted(p for p in EXAMPLES.glob("*.yaml") if p != SAMPLE_POLICY)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_example_is_accepted(api: LocalCluster, namespace: str, path: Path) -> None:
    api.kubectl("create", "-n", namespace, "-f", str(path))


def expectation(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# expect: "):
            return line[len("# expect: ") :]
    raise AssertionError(f"{path.name} has no '# expect:' line")


INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_is_rejected(api: LocalCluster, namespace: str, path: Path) -> None:
    result = api.kubectl("create", "-n", namespace, "-f", str(path), check=False)
    if result.returncode == 0 and "SovereigntyPolicy" in path.read_text():
        api.kubectl("delete", "-f", str(path), check=False)
    assert expectation(path) in denied(result)


def test_defaults_match_the_models(api: LocalCluster, namespace: str) -> None:
    create(api, ftj("defaults"), namespace)
    stored = get(api, "-n", namespace, "ftj", "defaults")["spec"]
    assert stored == FineTuneJobSpec.model_validate(MINIMAL_FTJ).to_json_dict()

    mdep = {"model": {"uri": "models:/faq/1"}}
    create(api, document("ModelDeployment", "defaults", mdep), namespace)
    stored = get(api, "-n", namespace, "mdep", "defaults")["spec"]
    assert stored == ModelDeploymentSpec.model_validate(mdep).to_json_dict()

    stored = get(api, "sovpol", "eu-only")["spec"]
    assert stored == SovereigntyPolicySpec.model_validate(SAMPLE_SPEC).to_json_dict()


def test_unknown_fields_are_rejected_strictly_and_pruned_otherwise(
    api: LocalCluster, namespace: str
) -> None:
    text = ftj("typo", baseModel={"uri": "hf://mistralai/x", "revison": "main"})
    result = api.kubectl(
        "apply", "-n", namespace, "--validate=strict", "-f", "-", stdin=text, check=False
    )
    assert 'unknown field "spec.baseModel.revison"' in denied(result)

    api.kubectl("apply", "-n", namespace, "--validate=false", "-f", "-", stdin=text)
    assert get(api, "-n", namespace, "ftj", "typo")["spec"]["baseModel"] == {
        "uri": "hf://mistralai/x"
    }


def test_explain_shows_the_model_descriptions(api: LocalCluster) -> None:
    def explained() -> str | None:
        result = api.kubectl("explain", "finetunejob.spec.method", check=False)
        return result.stdout if result.returncode == 0 else None

    text = " ".join(wait_for(explained, "kubectl explain to know FineTuneJob").split())
    for name, field in Method.model_fields.items():
        assert field.description is not None
        assert " ".join(field.description.split()) in text, name
    assert "enum: full, lora" in text


def test_get_shows_printer_columns(api: LocalCluster, namespace: str) -> None:
    create(api, ftj("columns"), namespace)
    status = {
        "phase": "Running",
        "startTime": "2026-11-27T08:00:00Z",
        "progress": {
            "step": 42,
            "totalSteps": 100,
            "percentage": 42,
            "trainLoss": 1.25,
            "estimatedRemainingSeconds": 310,
        },
        "placement": [{"pod": "p", "node": "kwok-eu-west-par-gpu-0", "region": "eu-west-par"}],
    }
    api.kubectl(
        "patch", "-n", namespace, "ftj", "columns", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip
    lines = api.kubectl("get", "-n", namespace, "ftj").stdout.splitlines()
    # What the README promises in plain `kubectl get ftj`: phase, progress, loss and ETA.
    assert lines[0].split() == ["NAME", "PHASE", "PROGRESS", "LOSS", "ETA", "REGION", "AGE"]
    assert lines[1].split()[:6] == ["columns", "Running", "42", "1.25", "310", "eu-west-par"]
    wide = api.kubectl("get", "-n", namespace, "ftj", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-4:] == ["METHOD", "BASE", "MODEL", "MODEL"]

    create(
        api, document("ModelDeployment", "columns", {"model": {"uri": "models:/faq/1"}}), namespace
    )
    mdep_status = {
        "phase": "Ready",
        "modelUri": "models:/faq/1",
        "readyReplicas": 1,
        "url": "http://columns.ns.svc:8000/v1",
    }
    api.kubectl(
        "patch", "-n", namespace, "mdep", "columns", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": mdep_status}),
    )  # fmt: skip
    lines = api.kubectl("get", "-n", namespace, "mdep").stdout.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "MODEL", "READY", "URL", "AGE"]
    assert lines[1].split()[:5] == [
        "columns", "Ready", "models:/faq/1", "1", "http://columns.ns.svc:8000/v1",
    ]  # fmt: skip


def test_short_names_and_category_list_every_kind(api: LocalCluster, namespace: str) -> None:
    create(api, ftj("listed"), namespace)
    create(
        api, document("ModelDeployment", "listed", {"model": {"uri": "models:/faq/1"}}), namespace
    )
    for short in ("ftj", "mdep", "sovpol"):
        api.kubectl("get", short, "-A")
    names = api.kubectl("get", "sovereign-ai", "-A", "-o", "name").stdout.split()
    assert "finetunejob.sovereign-ai.eu/listed" in names
    assert "modeldeployment.sovereign-ai.eu/listed" in names
    assert "sovereigntypolicy.sovereign-ai.eu/eu-only" in names
    # Without -A (as docs/api.md says): this namespace's jobs and deployments, and every
    # policy (cluster-scoped), each kind in a table of its own with its own columns.
    tables = api.kubectl("get", "sovereign-ai", "-n", namespace).stdout
    headers = [line.split() for line in tables.splitlines() if line.startswith("NAME")]
    assert headers[0][:5] == ["NAME", "PHASE", "PROGRESS", "LOSS", "ETA"]
    assert headers[1][:3] == ["NAME", "PHASE", "MODEL"]
    assert headers[2][:2] == ["NAME", "REGIONS"]
    assert "eu-only" in tables
    other = api.kubectl("get", "sovereign-ai", "-n", "default", "-o", "name").stdout.split()
    assert "finetunejob.sovereign-ai.eu/listed" not in other
    assert "sovereigntypolicy.sovereign-ai.eu/eu-only" in other


def patch_spec(
    cluster: LocalCluster, namespace: str, spec: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "patch", "-n", namespace, "ftj", "job", "--type=merge", "-p",
        json.dumps({"spec": spec}), check=False,
    )  # fmt: skip


def test_started_job_spec_is_immutable_except_suspend_and_cancel(
    api: LocalCluster, namespace: str
) -> None:
    create(api, ftj("job"), namespace)
    # Not started yet: the spec may still change.
    assert (
        patch_spec(api, namespace, {"method": {"hyperparameters": {"epochs": 2}}}).returncode == 0
    )

    api.kubectl(
        "patch", "-n", namespace, "ftj", "job", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"phase": "Running", "startTime": "2026-11-27T08:00:00Z"}}),
    )  # fmt: skip
    for change in (
        {"method": {"hyperparameters": {"epochs": 3}}},
        {"dataset": {"trainingUri": "s3://eu-datasets-par/other.jsonl"}},
        {"suffix": "late"},
        {"resources": {"workers": 2}},
    ):
        message = denied(patch_spec(api, namespace, change))
        assert "spec of a started FineTuneJob is immutable except spec.suspend" in message

    assert patch_spec(api, namespace, {"suspend": True}).returncode == 0
    api.kubectl("label", "-n", namespace, "ftj", "job", "team=nlp")
    stored = get(api, "-n", namespace, "ftj", "job")
    assert stored["spec"]["suspend"] is True
    assert stored["spec"]["method"]["hyperparameters"]["epochs"] == 2
    # A cancel is for good.
    assert patch_spec(api, namespace, {"cancel": True}).returncode == 0
    message = denied(patch_spec(api, namespace, {"cancel": False}))
    assert "spec.cancel cannot be set back to false" in message
    assert get(api, "-n", namespace, "ftj", "job")["spec"]["cancel"] is True


def test_no_policy_denies_creation_but_not_updates(api: LocalCluster, namespace: str) -> None:
    create(api, ftj("before"), namespace)
    saved = get(api, "sovpol")["items"]
    api.kubectl("delete", "sovpol", "--all")
    try:
        message = wait_for(
            lambda: (r := create(api, ftj("after"), namespace)).returncode != 0 and r.stderr,
            "creation to be denied without a policy",
        )
        assert "no params found for policy binding with `Deny` parameterNotFoundAction" in message
        # The operator must still be able to remove its finalizer and users to relabel.
        api.kubectl("label", "-n", namespace, "ftj", "before", "still=writable")
    finally:
        for item in saved:
            item["metadata"] = {
                "name": item["metadata"]["name"],
                "labels": item["metadata"].get("labels", {}),
            }
            api.kubectl("create", "-f", "-", stdin=json.dumps(item))
        wait_for(lambda: region_probe_denied(api, namespace), "the policies to be back")


def label_namespace(cluster: LocalCluster, namespace: str, labels: dict[str, str]) -> None:
    if labels:
        cluster.kubectl("label", "namespace", namespace, *(f"{k}={v}" for k, v in labels.items()))


def policy_ref_probe_denied(
    cluster: LocalCluster, namespace: str, name: str, **violation: Any
) -> bool:
    """Whether admission already sees the new policy ``name``. The probe names it in
    policyRef and otherwise breaks only a rule of ``name`` that eu-only allows (``violation``,
    by default a Paris region for a policy without Paris), so that once admission sees the
    policy it denies the probe, naming it: for the rule if the policy selects the namespace,
    for policyRef if not."""
    spec = {"placement": {"regions": ["eu-west-par"], "policyRef": name}} | violation
    result = create(
        cluster, ftj(f"probe-{uuid.uuid4().hex[:6]}", **spec), namespace, "--dry-run=server"
    )
    return result.returncode != 0 and f"SovereigntyPolicy {name}" in result.stderr


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    requirement: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        requirement["values"] = list(values)
    return {"matchExpressions": [requirement]}


def only_in(spec: dict[str, Any], region: str) -> dict[str, Any]:
    """The sample policy cut down to one region: its places, lists and Ray clusters elsewhere
    go (the policy's CEL rules refuse an endpoint or cluster outside allowedRegions)."""
    endpoints = [e for e in spec["storageEndpoints"] if e["region"] == region]
    kept = {e["name"] for e in endpoints}

    def patterns(key: str) -> list[dict[str, Any]]:
        return [p for p in spec[key] if p.get("endpoint") in (None, *kept)]

    return spec | {
        "allowedRegions": [region],
        "storageEndpoints": endpoints,
        "allowedStorage": patterns("allowedStorage"),
        "allowedModelSources": patterns("allowedModelSources"),
        "rayClusters": [c for c in spec["rayClusters"] if c["region"] == region],
    }


@pytest.mark.parametrize(
    ("selector", "labels"),
    [
        ({"matchLabels": {"team": "a"}}, {"team": "a"}),
        ({"matchLabels": {"team": "a"}}, {"team": "b"}),
        (expr("team", "In", "a", "b"), {"team": "b"}),
        (expr("team", "In", "a"), {}),
        (expr("team", "NotIn", "a"), {"team": "c"}),
        (expr("team", "NotIn", "a"), {"team": "a"}),
        (expr("regulated", "Exists"), {"regulated": "yes"}),
        (expr("regulated", "Exists"), {}),
        (expr("sandbox", "DoesNotExist"), {}),
        (expr("sandbox", "DoesNotExist"), {"sandbox": "1"}),
    ],
)
def test_namespace_selector_decides_which_policies_apply(
    api: LocalCluster,
    namespace: str,
    policy: Callable[[str, dict[str, Any]], None],
    selector: dict[str, Any],
    labels: dict[str, str],
) -> None:
    """A Frankfurt-only policy applies, on top of eu-only, exactly where the operator's
    selects_namespace says it does."""
    label_namespace(api, namespace, labels)
    name = f"fra-{uuid.uuid4().hex[:6]}"
    spec = only_in(SAMPLE_SPEC, "eu-central-fra") | {"namespaceSelector": selector}
    policy(name, spec)
    wait_for(lambda: policy_ref_probe_denied(api, namespace, name), f"admission to see {name}")

    ns_labels = get(api, "namespace", namespace)["metadata"]["labels"]
    applies = selects_namespace(SovereigntyPolicySpec.model_validate(spec), ns_labels)
    result = create(api, ftj("paris", placement={"regions": ["eu-west-par"]}), namespace)
    if applies:
        assert f"not allowed by SovereigntyPolicy {name}" in denied(result)
    else:
        assert result.returncode == 0, result.stderr


def test_policy_ref_must_select_the_namespace(
    api: LocalCluster, namespace: str, policy: Callable[[str, dict[str, Any]], None]
) -> None:
    spec = SAMPLE_SPEC | {"namespaceSelector": {"matchLabels": {"team": "x"}}}
    policy("team-x", spec)
    wait_for(lambda: policy_ref_probe_denied(api, namespace, "team-x"), "admission to see team-x")
    result = create(api, ftj("ref", placement={"policyRef": "team-x"}), namespace)
    assert (
        f"spec.placement.policyRef: SovereigntyPolicy team-x does not select namespace {namespace}"
        in denied(result)
    )
    label_namespace(api, namespace, {"team": "x"})
    assert create(api, ftj("ref", placement={"policyRef": "team-x"}), namespace).returncode == 0


@pytest.mark.parametrize(
    "uri",
    [
        "s3://eu-data-par/train.jsonl",  # "*-par"
        "s3://eu-data-fra/train.jsonl",
        "s3://eu-exact/train.jsonl",  # exact
        "s3://eu-exact2/train.jsonl",
    ],
)
def test_host_patterns_match_like_the_operator(
    api: LocalCluster, namespace: str, policy: Callable[[str, dict[str, Any]], None], uri: str
) -> None:
    label_namespace(api, namespace, {"patterns": "on"})
    name = f"patterns-{uuid.uuid4().hex[:6]}"
    spec = SAMPLE_SPEC | {
        "allowedStorage": [
            {"scheme": "s3", "host": "*-par", "endpoint": "scw-par"},
            {"scheme": "s3", "host": "eu-exact", "endpoint": "scw-par"},
        ],
        "namespaceSelector": {"matchLabels": {"patterns": "on"}},
    }
    policy(name, spec)
    other = {"dataset": {"trainingUri": "s3://eu-probe-fra/train.jsonl"}}
    wait_for(
        lambda: policy_ref_probe_denied(api, namespace, name, **other), f"admission to see {name}"
    )
    allowed = uri_allowed(uri, SovereigntyPolicySpec.model_validate(spec).allowed_storage)
    result = create(api, ftj("data", dataset={"trainingUri": uri}), namespace)
    if allowed:
        assert result.returncode == 0, result.stderr
    else:
        assert f"is not in allowedStorage of SovereigntyPolicy {name}" in denied(result)


def test_admission_policies_type_check_cleanly(api: LocalCluster) -> None:
    def checked() -> list[Any] | None:
        items = get(api, "validatingadmissionpolicies")["items"]
        ours = [i for i in items if i["metadata"]["name"].endswith(".sovereign-ai.eu")]
        done = [i for i in ours if "typeChecking" in i.get("status", {})]
        return done if len(done) == 2 else None

    for item in wait_for(checked, "type checking of the admission policies"):
        assert item["status"]["typeChecking"].get("expressionWarnings", []) == [], item["metadata"]


def test_metadata_updates_are_not_rejudged(
    api: LocalCluster, namespace: str, policy: Callable[[str, dict[str, Any]], None]
) -> None:
    """A policy tightened after creation blocks spec changes, not finalizers or labels."""
    create(api, ftj("old", placement={"regions": ["eu-west-par"]}), namespace)
    label_namespace(api, namespace, {"tightened": "yes"})
    spec = only_in(SAMPLE_SPEC, "eu-central-fra") | {
        "namespaceSelector": {"matchLabels": {"tightened": "yes"}}
    }
    policy("tightened", spec)
    wait_for(lambda: policy_ref_probe_denied(api, namespace, "tightened"), "admission to see it")

    api.kubectl("label", "-n", namespace, "ftj", "old", "audited=yes")
    api.kubectl(
        "patch", "-n", namespace, "ftj", "old", "--type=merge",
        "-p", json.dumps({"metadata": {"finalizers": ["sovereign-ai.eu/finalizer"]}}),
    )  # fmt: skip
    api.kubectl(
        "patch", "-n", namespace, "ftj", "old", "--type=json",
        "-p", json.dumps([{"op": "remove", "path": "/metadata/finalizers"}]),
    )  # fmt: skip
    result = api.kubectl(
        "patch", "-n", namespace, "ftj", "old", "--type=merge",
        "-p", json.dumps({"spec": {"suffix": "v2"}}), check=False,
    )  # fmt: skip
    assert "not allowed by SovereigntyPolicy tightened" in denied(result)


def test_a_new_job_gets_the_operators_finalizer_at_admission(
    api: LocalCluster, namespace: str
) -> None:
    """The MutatingAdmissionPolicy gives a created FineTuneJob the operator's finalizer, so
    that the operator's first pass makes its children at once (Kopf would otherwise add it
    in a write and a watch round trip of its own). Finalizers a user wrote stay; ours is
    never there twice."""

    def created(name: str, finalizers: list[str] | None = None) -> list[str]:
        body = yaml.safe_load(ftj(name))
        if finalizers is not None:
            body["metadata"]["finalizers"] = finalizers
        result = create(api, json.dumps(body), namespace, "-o", "json")
        assert result.returncode == 0, result.stderr
        return list(json.loads(result.stdout)["metadata"].get("finalizers") or [])

    ours = "sovereign-ai.eu/finalizer"
    assert wait_for(lambda: created(f"plain-{uuid.uuid4().hex[:6]}") == [ours] or None,
                    "the finalizer policy to be in force") is True  # fmt: skip
    assert sorted(created("users", ["example.com/hold"])) == sorted(["example.com/hold", ours])
    assert created("already", [ours]) == [ours]


def test_the_finalizer_policy_is_stored_as_written(api: LocalCluster) -> None:
    """The API server adds no default to the MutatingAdmissionPolicy or its binding: GitOps
    tools that cannot default the kind themselves (Argo CD 3.3) would otherwise show each
    default as drift for ever (test_gitops saw it: the Application never Synced)."""
    written = [
        doc
        for doc in yaml.safe_load_all((CRDS / "admission-policies.yaml").read_text())
        if doc and doc["kind"].startswith("Mutating")
    ]
    assert {doc["kind"] for doc in written} == {
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
    }
    for doc in written:
        stored = json.loads(
            api.kubectl("get", doc["kind"].lower(), doc["metadata"]["name"], "-o", "json").stdout
        )
        assert stored["spec"] == doc["spec"], doc["kind"]
