"""The Helm chart: lint, rendered fields that matter, values <-> Settings, CRDs in sync, RBAC."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_render import (
    CHART,
    REPO_ROOT,
    of_kind,
    one,
    run_helm,
    template,
    template_error,
    value_args,
)

from sovereign_operator.api.v1alpha1.finetunejob import FineTuneJobSpec
from sovereign_operator.api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from sovereign_operator.config import Settings
from sovereign_operator.policy import check_finetunejob

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def snake(camel_name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", camel_name).lower()


def deployment(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return one(template(values), "Deployment")


def container(values: dict[str, Any] | None = None) -> dict[str, Any]:
    containers = deployment(values)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


# -- lint -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"config": {**VALUES["config"], "replicas": 3, "namespaces": ["team-a", "team-b"]}},
        {"metrics": {**VALUES["metrics"], "serviceMonitor": {"enabled": True}}},
        {
            "config": {**VALUES["config"], "auditUri": "s3://sovai-audit/prod"},
            "audit": {"credentialsSecret": "audit-credentials"},
        },
    ],
    ids=["defaults", "peering-namespaced", "servicemonitor", "audit-log"],
)
def test_helm_lint_strict(values: dict[str, Any]) -> None:
    args = [arg for key, v in values.items() for arg in ("--set-json", f"{key}={json.dumps(v)}")]
    result = run_helm("lint", "--strict", str(CHART), "--kube-version", "1.36.3", *args)
    assert "0 chart(s) failed" in result.stdout


# -- values and schema ----------------------------------------------------------------------


def test_config_values_are_one_to_one_with_settings() -> None:
    fields = {camel(name) for name in Settings.model_fields}
    assert set(VALUES["config"]) == fields
    assert set(SCHEMA["properties"]["config"]["properties"]) == fields


def test_rendered_environment_parses_into_the_same_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = {
        **VALUES["config"],
        "mlflowTrackingUri": "http://mlflow.ml.svc:5000",
        "mlflowSecretName": "mlflow-auth",
        "startupDeadlineSeconds": 45,
        "workerLimit": 64,
        "servingImage": "registry.eu-west-par.example.eu/sovereign-ai/serve:0.1.0",
        "modelCacheClaim": "model-cache",
        "namespaces": ["team-a", "team-b"],
        "reconcileIntervalSeconds": 2.5,
        "hfHubOffline": False,
        "logFormat": "text",
        "auditUri": "s3://sovai-audit/prod/eu-west-par",
        "auditEndpoint": "https://s3.gra.io.cloud.ovh.net",
        "auditRegion": "gra",
    }
    values = {"config": config, "audit": {"credentialsSecret": "audit-credentials"}}
    env = {e["name"]: e["value"] for e in container(values)["env"] if "value" in e}
    sovai = {name: value for name, value in env.items() if name.startswith("SOVAI_")}
    assert set(sovai) == {f"SOVAI_{name.upper()}" for name in Settings.model_fields}
    for name in list(os.environ):
        if name.startswith("SOVAI_"):
            monkeypatch.delenv(name)
    for name, value in sovai.items():
        monkeypatch.setenv(name, value)
    assert Settings().model_dump() == {snake(key): value for key, value in config.items()}


def test_null_settings_are_left_unset() -> None:
    names = {e["name"] for e in container()["env"]}
    assert "SOVAI_MLFLOW_TRACKING_URI" not in names  # null: the operator's default applies
    assert "SOVAI_NAMESPACES" not in names  # empty list: the whole cluster
    assert "SOVAI_RUNTIME_IMAGE" in names


def _documented_keys(lines: list[str]) -> list[str]:
    """Paths of keys in values.yaml without a `# --` comment right above them."""
    # Kubernetes-typed or free-form subtrees: documented once, at their own key.
    opaque = {
        "podSecurityContext",
        "securityContext",
        "resources",
        "sovereigntyPolicy.spec",
        "networkPolicy.metricsFrom",
        "networkPolicy.dnsTo",
        "networkPolicy.rayDashboards",
        "networkPolicy.auditStore",
        "networkPolicy.mlflow",
    }
    missing: list[str] = []
    stack: list[tuple[int, str]] = []
    block: list[str] = []  # the comment lines right above the current line
    for line in lines:
        match = re.match(r"^( *)([A-Za-z][\w-]*):", line)
        if match:
            indent, key = len(match.group(1)), match.group(2)
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = ".".join([p for _, p in stack] + [key])
            inside_opaque = any(path.startswith(o + ".") for o in opaque)
            if not inside_opaque and not any(c.startswith("# --") for c in block):
                missing.append(path)
            stack.append((indent, key))
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped)
        elif stripped:
            block = []
    return missing


def test_every_value_is_documented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    assert _documented_keys(lines) == []
    # The check itself catches an undocumented key.
    assert _documented_keys(["# -- ok", "a:", "  b: 1"]) == ["a.b"]


def _objects_without_closed_properties(node: Any, path: str = "") -> list[str]:
    if not isinstance(node, dict):
        return []
    found = []
    if "properties" in node and node.get("additionalProperties") is not False:
        found.append(path or "/")
    for key, child in node.items():
        if isinstance(child, dict):
            found += _objects_without_closed_properties(child, f"{path}/{key}")
    return found


def test_schema_closes_every_object() -> None:
    assert _objects_without_closed_properties(SCHEMA) == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2}, "additional properties 'replicaCount' not allowed"),
        ({"config": {**VALUES["config"], "logFormat": "xml"}}, "/config/logFormat"),
        ({"config": {**VALUES["config"], "metricsPort": 70000}}, "/config/metricsPort"),
        ({"rbac": {"create": True, "raySecrets": [{"name": "x"}]}}, "namespace"),
        (
            {"securityContext": {**VALUES["securityContext"], "allowPrivilegeEscalation": True}},
            "/securityContext/allowPrivilegeEscalation",
        ),
        ({"config": {**VALUES["config"], "auditUri": "https://x/y"}}, "/config/auditUri"),
        ({"config": {**VALUES["config"], "auditEndpoint": "s3.eu"}}, "/config/auditEndpoint"),
        ({"audit": {"credentialsSecret": "Audit_Keys"}}, "/audit/credentialsSecret"),
        ({"audit": {"secret": "audit-keys"}}, "additional properties 'secret' not allowed"),
    ],
    ids=[
        "unknown-key",
        "bad-enum",
        "bad-port",
        "secret-without-namespace",
        "escalation",
        "audit-uri-not-s3",
        "audit-endpoint-not-url",
        "audit-secret-not-a-name",
        "audit-unknown-key",
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    assert message in template_error(values)


def test_schema_policy_spec_matches_the_crd() -> None:
    crd = yaml.safe_load(
        (REPO_ROOT / "crds" / "sovereign-ai.eu_sovereigntypolicies.yaml").read_text()
    )
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    schema_spec = SCHEMA["properties"]["sovereigntyPolicy"]["properties"]["spec"]
    assert set(schema_spec["properties"]) == set(spec["properties"])
    assert schema_spec["required"] == spec["required"]


# -- Deployment -----------------------------------------------------------------------------


def test_deployment_single_replica_recreate_restricted() -> None:
    rendered = deployment()
    spec = rendered["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "rel-sovereign-ai-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    main = container()
    assert main["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert main["image"] == "registry.sovereign-ai.eu/sovereign-ai/operator:0.1.0"
    assert main["command"] == ["python", "-m", "sovereign_operator"]
    assert main["resources"]["limits"]["memory"] == "512Mi"
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert main[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_health_port_zero_turns_probes_off() -> None:
    main = container({"config": {**VALUES["config"], "healthPort": 0, "metricsPort": 0}})
    assert "livenessProbe" not in main
    assert "ports" not in main


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "a" * 64
    main = container({"image": {**VALUES["image"], "tag": "9.9.9", "digest": digest}})
    assert main["image"] == f"registry.sovereign-ai.eu/sovereign-ai/operator@{digest}"


def test_replicas_above_one_use_kopf_peering() -> None:
    docs = template({"config": {**VALUES["config"], "replicas": 3}})
    spec = one(docs, "Deployment")["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["type"] == "RollingUpdate"
    crds = {d["metadata"]["name"] for d in of_kind(docs, "CustomResourceDefinition")}
    assert "clusterkopfpeerings.kopf.dev" in crds
    peering = one(docs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "sovereign-ai-operator"
    rules = one(docs, "ClusterRole")["rules"]
    assert {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
            "verbs": ["get", "list", "watch", "patch"]} in rules  # fmt: skip


def test_single_replica_has_no_peering() -> None:
    docs = template()
    assert of_kind(docs, "ClusterKopfPeering") == []
    assert "kopf.dev" not in json.dumps(one(docs, "ClusterRole"))


# -- audit log ------------------------------------------------------------------------------

AUDIT_CONFIG = {**VALUES["config"], "auditUri": "s3://sovai-audit/prod"}
AUDIT = {"config": AUDIT_CONFIG, "audit": {"credentialsSecret": "audit-credentials"}}
AUDIT_STORE_RULE = {
    "to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}],
    "ports": [{"port": 443, "protocol": "TCP"}],
}


def _secret_key_ref(name: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": "audit-credentials", "key": name}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def test_audit_log_gets_its_uri_and_credentials_by_secret_key_ref() -> None:
    main = container(AUDIT)
    env = {e["name"]: e for e in main["env"]}
    assert env["SOVAI_AUDIT_URI"] == {"name": "SOVAI_AUDIT_URI", "value": "s3://sovai-audit/prod"}
    assert "SOVAI_AUDIT_ENDPOINT" not in env  # null: AWS S3
    assert "SOVAI_AUDIT_REGION" not in env
    assert env["AWS_ACCESS_KEY_ID"] == _secret_key_ref("AWS_ACCESS_KEY_ID")
    assert env["AWS_SECRET_ACCESS_KEY"] == _secret_key_ref("AWS_SECRET_ACCESS_KEY")
    assert env["AWS_SESSION_TOKEN"] == _secret_key_ref("AWS_SESSION_TOKEN", optional=True)
    # One variable at a time, never the whole Secret.
    assert "envFrom" not in main


def test_no_audit_log_renders_no_audit_environment() -> None:
    names = {e["name"] for e in container()["env"]}
    assert not {n for n in names if n.startswith(("SOVAI_AUDIT_", "AWS_"))}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"config": AUDIT_CONFIG},
            "config.auditUri is set but audit.credentialsSecret is not",
        ),
        (
            {"config": {**VALUES["config"], "auditEndpoint": "https://s3.gra.io.cloud.ovh.net"}},
            "config.auditEndpoint is set but config.auditUri is not",
        ),
        (
            {"config": {**VALUES["config"], "auditRegion": "gra"}},
            "config.auditRegion is set but config.auditUri is not",
        ),
        (
            {"audit": {"credentialsSecret": "audit-credentials"}},
            "audit.credentialsSecret is set but config.auditUri is not",
        ),
    ],
    ids=["uri-without-secret", "endpoint-without-uri", "region-without-uri", "secret-without-uri"],
)
def test_incomplete_audit_settings_fail_rendering(values: dict[str, Any], message: str) -> None:
    assert message in template_error(values)


def test_network_policy_lets_the_operator_reach_the_audit_store() -> None:
    values = {
        **AUDIT,
        "networkPolicy": {**VALUES["networkPolicy"], "auditStore": [AUDIT_STORE_RULE]},
    }
    egress = one(template(values), "NetworkPolicy")["spec"]["egress"]
    assert egress[-1] == AUDIT_STORE_RULE
    assert len(egress) == 3  # DNS, the API server, the store
    assert AUDIT_STORE_RULE not in one(template(AUDIT), "NetworkPolicy")["spec"]["egress"]


# -- MLflow ----------------------------------------------------------------------------------

MLFLOW_CONFIG = {**VALUES["config"], "mlflowTrackingUri": "http://mlflow.mlflow.svc:5000"}
MLFLOW = {"config": MLFLOW_CONFIG, "mlflow": {"credentialsSecret": "operator-mlflow"}}
MLFLOW_RULE = {
    "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mlflow"}}}],
    "ports": [{"port": 5000, "protocol": "TCP"}],
}


def test_the_operator_gets_its_own_mlflow_credentials_by_optional_secret_key_refs() -> None:
    env = {e["name"]: e for e in container(MLFLOW)["env"]}
    for key in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        ref = {"name": "operator-mlflow", "key": key, "optional": True}
        assert env[key] == {"name": key, "valueFrom": {"secretKeyRef": ref}}
    # Without the Secret: no credentials, and no Secret the operator may read (RBAC).
    names = {e["name"] for e in container({"config": MLFLOW_CONFIG})["env"]}
    assert not {n for n in names if n.startswith("MLFLOW_")}
    docs = template(MLFLOW)
    assert not any(
        "secrets" in rule.get("resources", [])
        for doc in docs
        if doc["kind"] in ("Role", "ClusterRole")
        for rule in doc.get("rules") or []
    )


def test_mlflow_credentials_without_a_tracking_server_fail_rendering() -> None:
    assert "mlflow.credentialsSecret is set but config.mlflowTrackingUri is not" in (
        template_error({"mlflow": {"credentialsSecret": "operator-mlflow"}})
    )


def test_network_policy_lets_the_operator_reach_the_tracking_server() -> None:
    values = {**MLFLOW, "networkPolicy": {**VALUES["networkPolicy"], "mlflow": [MLFLOW_RULE]}}
    egress = one(template(values), "NetworkPolicy")["spec"]["egress"]
    assert egress[-1] == MLFLOW_RULE
    assert MLFLOW_RULE not in one(template(MLFLOW), "NetworkPolicy")["spec"]["egress"]


def _notes(values: dict[str, Any], tmp_path: Path) -> str:
    """NOTES.txt as `helm install` prints it: `helm template` renders every template but that
    one, so a copy of the chart renders it through tpl into a document of its own."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "NOTES.txt").rename(chart / "notes.txt")
    (chart / "templates" / "notes.yaml").write_text(
        'notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n'
    )
    result = run_helm(
        "template", "rel", str(chart), "--show-only", "templates/notes.yaml",
        *value_args(values),
    )  # fmt: skip
    notes: str = yaml.safe_load(result.stdout)["notes"]
    return " ".join(notes.split())


def test_notes_say_whether_an_audit_log_is_kept(tmp_path: Path) -> None:
    assert "No audit log is kept (config.auditUri is unset): see docs/compliance.md" in _notes(
        {}, tmp_path / "none"
    )
    kept = _notes(AUDIT, tmp_path / "kept")
    assert "No audit log" not in kept
    assert "Audit log: s3://sovai-audit/prod, written with the credentials of Secret" in kept
    assert "`sovai audit verify` checks its hash chain" in kept
    assert "networkPolicy.auditStore is empty" in kept
    reached = {
        **AUDIT,
        "networkPolicy": {**VALUES["networkPolicy"], "auditStore": [AUDIT_STORE_RULE]},
    }
    assert "networkPolicy.auditStore is empty" not in _notes(reached, tmp_path / "reached")


# -- metrics --------------------------------------------------------------------------------


def test_metrics_service_and_servicemonitor() -> None:
    docs = template({"metrics": {**VALUES["metrics"], "serviceMonitor": {"enabled": True}}})
    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "metrics"
    assert of_kind(template(), "ServiceMonitor") == []


def test_servicemonitor_without_service_fails() -> None:
    metrics = {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}
    assert "needs metrics.service.enabled" in template_error({"metrics": metrics})


# -- CRDs, admission policies, default policy -----------------------------------------------


def _generated(name: str) -> list[dict[str, Any]]:
    text = (REPO_ROOT / "crds" / name).read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _without_chart_metadata(doc: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    doc["metadata"].pop("annotations", None)
    doc["metadata"]["labels"] = {
        k: v
        for k, v in doc["metadata"].get("labels", {}).items()
        if k == "app.kubernetes.io/part-of"
    }
    return doc


def test_chart_crd_copy_is_in_sync_with_crds() -> None:
    generated = {p.name: p.read_bytes() for p in (REPO_ROOT / "crds").glob("*.yaml")}
    copied = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
    assert copied == generated, "run `make crds` (it copies crds/ into the chart)"


def test_rendered_crds_equal_the_generated_ones_and_are_kept() -> None:
    docs = template()
    rendered = {d["metadata"]["name"]: d for d in of_kind(docs, "CustomResourceDefinition")}
    generated = [
        doc
        for path in sorted((REPO_ROOT / "crds").glob("sovereign-ai.eu_*.yaml"))
        for doc in _generated(path.name)
    ]
    assert set(rendered) == {doc["metadata"]["name"] for doc in generated}
    for doc in generated:
        crd = rendered[doc["metadata"]["name"]]
        assert _without_chart_metadata(crd) == doc
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-2"


def test_crds_disabled_renders_none() -> None:
    assert of_kind(template({"crds": {"enabled": False}}), "CustomResourceDefinition") == []


MUTATING_ADMISSION_POLICY = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"
ADMISSION_KINDS = (
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
)


def test_admission_policies_are_rendered_as_generated() -> None:
    docs = template(api_versions=(MUTATING_ADMISSION_POLICY,))
    rendered = [d for d in docs if d["kind"] in ADMISSION_KINDS]

    def key(doc: dict[str, Any]) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]

    generated = sorted(_generated("admission-policies.yaml"), key=key)
    assert sorted((_without_chart_metadata(d) for d in rendered), key=key) == generated
    assert all(
        d["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-1" for d in rendered
    )
    off = template(
        {"admissionPolicy": {"enabled": False}}, api_versions=(MUTATING_ADMISSION_POLICY,)
    )
    assert [d for d in off if d["kind"] in ADMISSION_KINDS] == []


def test_finalizer_policy_needs_the_kind_and_binds_only_watched_namespaces() -> None:
    """Without MutatingAdmissionPolicy (before Kubernetes 1.36) the operator adds its
    finalizer itself; with namespaces set, no job elsewhere gets a finalizer nobody removes."""
    older = template()
    assert of_kind(older, "MutatingAdmissionPolicy") == []
    assert of_kind(older, "MutatingAdmissionPolicyBinding") == []
    assert of_kind(older, "ValidatingAdmissionPolicy") != []
    (cluster_wide,) = of_kind(
        template(api_versions=(MUTATING_ADMISSION_POLICY,)), "MutatingAdmissionPolicyBinding"
    )
    assert cluster_wide["spec"]["matchResources"]["namespaceSelector"] == {}  # every namespace
    (scoped,) = of_kind(
        template(
            {"config": {"namespaces": ["ml-a", "ml-b"]}}, api_versions=(MUTATING_ADMISSION_POLICY,)
        ),
        "MutatingAdmissionPolicyBinding",
    )
    assert scoped["spec"]["matchResources"]["namespaceSelector"] == {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["ml-a", "ml-b"]}
        ]
    }


def test_default_policy_is_valid_and_a_hook() -> None:
    policy = one(template(), "SovereigntyPolicy")
    assert policy["metadata"]["name"] == VALUES["config"]["defaultPolicy"]
    assert policy["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    SovereigntyPolicySpec.model_validate(policy["spec"])


def unsafe(spec: dict[str, Any]) -> list[str]:
    """What a policy allows that a user must have written down: node paths, a Ray cluster
    reached over plain HTTP, an s3 entry that names no declared endpoint."""
    declared = {e["name"] for e in spec.get("storageEndpoints", [])}
    found = []
    for list_name in ("allowedStorage", "allowedModelSources"):
        for entry in spec.get(list_name, []):
            if entry["scheme"] == "file":
                found.append(f"{list_name}: file://{entry['host']}")
            if entry["scheme"] == "s3" and entry.get("endpoint") not in declared:
                found.append(f"{list_name}: s3://{entry['host']} at no declared endpoint")
    for cluster in spec.get("rayClusters", []):
        if not cluster["address"].startswith("https://"):
            found.append(f"rayClusters: {cluster['address']}")
    return found


# What values.yaml held before the safe defaults: the check finds each of its problems.
OLD_DEFAULT = {
    "allowedRegions": ["eu-west-par"],
    "allowedStorage": [{"scheme": "s3", "host": "eu-*"}, {"scheme": "file", "host": "*"}],
    "rayClusters": [
        {"name": "shared-eu", "address": "http://ray-head.ray-system.svc:8265", "region": "x"}
    ],
}
# The override docs/helm.md shows: an object store written down, in a region added for it.
DECLARED_S3 = {
    "allowedRegions": ["eu-west-par", "eu-central-fra", "eu-west-gra"],
    "storageEndpoints": [
        {
            "name": "ovh-gra",
            "url": "https://s3.gra.io.cloud.ovh.net",
            "region": "eu-west-gra",
            "cidrs": ["203.0.113.0/24"],
        }
    ],
    "allowedStorage": [
        {"scheme": "pvc", "host": "*"},
        {"scheme": "s3", "host": "eu-*", "endpoint": "ovh-gra"},
    ],
}


def test_default_policy_allows_no_node_path_plain_http_ray_or_undeclared_store() -> None:
    spec = one(template(), "SovereigntyPolicy")["spec"]
    assert unsafe(spec) == []
    assert spec["storageEndpoints"] == []
    assert spec["rayClusters"] == []
    assert unsafe(OLD_DEFAULT) == [
        "allowedStorage: s3://eu-* at no declared endpoint",
        "allowedStorage: file://*",
        "rayClusters: http://ray-head.ray-system.svc:8265",
    ]


def test_a_declared_object_store_is_written_down_in_values() -> None:
    values = {"sovereigntyPolicy": {**VALUES["sovereigntyPolicy"], "spec": DECLARED_S3}}
    spec = one(template(values), "SovereigntyPolicy")["spec"]
    assert unsafe(spec) == []
    parsed = SovereigntyPolicySpec.model_validate(spec)
    assert [p.endpoint for p in parsed.allowed_storage] == [None, "ovh-gra"]


def test_default_policy_under_argocd_is_a_wave() -> None:
    policy = one(template({"sovereigntyPolicy": {**VALUES["sovereigntyPolicy"], "asHook": False}}),
                 "SovereigntyPolicy")  # fmt: skip
    annotations = policy["metadata"]["annotations"]
    assert "helm.sh/hook" not in annotations
    assert annotations["argocd.argoproj.io/sync-wave"] == "-1"


def test_default_policy_needs_a_name() -> None:
    error = template_error({"config": {**VALUES["config"], "defaultPolicy": None}})
    assert "config.defaultPolicy must name the SovereigntyPolicy" in error


# -- RBAC -----------------------------------------------------------------------------------


def _rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for d in docs if d["kind"] in ("ClusterRole", "Role") for rule in d["rules"]]


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"config": {**VALUES["config"], "replicas": 2, "namespaces": ["a"]}},
        {"rbac": {"create": True, "raySecrets": [{"namespace": "ray-system", "name": "tok"}]}},
    ],
    ids=["cluster", "namespaced-peering", "ray-secret"],
)
def test_rbac_has_no_wildcards(values: dict[str, Any]) -> None:
    rules = _rules(template(values))
    assert rules
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert all("*" not in item for item in rule.get(key, [])), rule


def _rule_comment_gaps(text: str) -> list[int]:
    lines = text.splitlines()
    gaps = []
    for i, line in enumerate(lines):
        if re.match(r"^\s*- apiGroups:", line) and not lines[i - 1].strip().startswith("#"):
            gaps.append(i + 1)
    return gaps


def test_every_rbac_rule_says_which_code_path_needs_it() -> None:
    for name in ("rbac.yaml", "_rbac.tpl"):
        assert _rule_comment_gaps((CHART / "templates" / name).read_text()) == [], name
    assert _rule_comment_gaps("x:\n- apiGroups: []\n") == [2]


def test_cluster_wide_rbac_grants_exactly_the_operators_calls() -> None:
    docs = template()
    rules = [(r["apiGroups"], r["resources"], r["verbs"]) for r in _rules(docs)]
    assert rules == [
        (["sovereign-ai.eu"], ["sovereigntypolicies"], ["list", "watch"]),
        ([""], ["nodes"], ["list", "watch"]),
        ([""], ["namespaces"], ["get", "list", "watch"]),
        (["apiextensions.k8s.io"], ["customresourcedefinitions"], ["list", "watch"]),
        (["sovereign-ai.eu"], ["finetunejobs", "modeldeployments"], ["list", "watch", "patch"]),
        (["sovereign-ai.eu"], ["finetunejobs", "modeldeployments"], ["get"]),
        (["sovereign-ai.eu"], ["finetunejobs/status", "modeldeployments/status"], ["patch"]),
        (
            ["sovereign-ai.eu"],
            ["finetunejobs/finalizers", "modeldeployments/finalizers"],
            ["update"],
        ),
        (["ray.io"], ["rayjobs"], ["create", "get", "patch", "delete"]),
        (["ray.io"], ["rayjobs"], ["list", "watch"]),
        (["kueue.x-k8s.io"], ["workloads"], ["list", "watch"]),
        ([""], ["pods"], ["list", "watch"]),
        ([""], ["pods/log"], ["get"]),
        (["apps"], ["deployments"], ["create", "get", "patch", "delete"]),
        (["apps"], ["deployments"], ["list", "watch"]),
        ([""], ["services"], ["create", "get", "patch", "delete"]),
        (["autoscaling"], ["horizontalpodautoscalers"], ["create", "get", "patch", "delete"]),
        (["policy"], ["poddisruptionbudgets"], ["create", "get", "patch", "delete"]),
        (["networking.k8s.io"], ["networkpolicies"], ["create", "get", "patch", "delete"]),
        ([""], ["events"], ["create"]),
    ]
    assert of_kind(docs, "Role") == []
    binding = one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rel-sovereign-ai-operator", "namespace": "sovai-system"}
    ]
    assert "secrets" not in json.dumps(_rules(docs))


def test_watched_namespaces_get_roles_not_cluster_rules() -> None:
    docs = template({"config": {**VALUES["config"], "namespaces": ["team-a", "team-b"]}})
    roles = of_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    cluster_resources = {res for r in one(docs, "ClusterRole")["rules"] for res in r["resources"]}
    assert cluster_resources == {
        "sovereigntypolicies",
        "nodes",
        "namespaces",
        "customresourcedefinitions",
    }
    assert len(of_kind(docs, "RoleBinding")) == 2


def test_ray_secret_is_readable_by_name_only() -> None:
    docs = template(
        {"rbac": {"create": True, "raySecrets": [{"namespace": "ray-system", "name": "tok"}]}}
    )
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == "ray-system"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["tok"], "verbs": ["get"]}
    ]


def test_rbac_off_renders_no_rbac() -> None:
    docs = template({"rbac": {"create": False, "raySecrets": []}})
    assert not [d for d in docs if d["apiVersion"].startswith("rbac.authorization.k8s.io")]


def test_chart_has_no_plain_crds_folder() -> None:
    # Helm would install but never upgrade a crds/ folder; the CRDs are templates instead.
    assert not Path(CHART / "crds").exists()


def _leaf_paths(node: dict[str, Any], prefix: str = "") -> list[str]:
    opaque = {"podSecurityContext", "securityContext", "resources", "sovereigntyPolicy.spec"}
    paths = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in opaque:
            paths += _leaf_paths(value, f"{path}.")
        else:
            paths.append(path)
    return paths


def test_docs_values_table_lists_every_value() -> None:
    docs = (REPO_ROOT / "docs" / "helm.md").read_text()
    table = set(re.findall(r"^\| `([\w.-]+)` \|", docs, flags=re.MULTILINE))
    assert table == set(_leaf_paths(VALUES))


def test_default_images_are_allowed_by_the_default_policy() -> None:
    """A fresh install must run the examples that name no image: the operator's default
    training and serving images come from a registry the chart's own policy allows."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    policy = SovereigntyPolicySpec.model_validate(values["sovereigntyPolicy"]["spec"])
    spec = FineTuneJobSpec.model_validate(
        {"baseModel": {"uri": "hf://mistralai/x"}, "dataset": {"trainingUri": "pvc://d/t"}}
    )
    config = values["config"]
    for image in (config["runtimeImage"], config["vllmImage"]):
        assert check_finetunejob(spec, policy, "eu-only", default_image=image) == [], image
