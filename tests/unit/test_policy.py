"""The operator's re-check of SovereigntyPolicies (policy/), held to the admission examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sovereign_operator.api.v1alpha1 import (
    FineTuneJobSpec,
    ModelDeploymentSpec,
    SovereigntyPolicySpec,
)
from sovereign_operator.api.v1alpha1.common import Placement
from sovereign_operator.api.v1alpha1.sovereigntypolicy import StorageEndpoint, UriPattern, UriScheme
from sovereign_operator.policy import (
    Violation,
    check_finetunejob,
    check_modeldeployment,
    effective_regions,
    image_allowed,
    selects_namespace,
    uri_allowed,
    uri_host,
)
from sovereign_operator.policy.places import (
    Platform,
    hub_mirror,
    routes_document,
    tracking_endpoint,
)
from sovereign_operator.policy.residency import finetunejob_places
from sovereign_operator.policy.uris import host_matches

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EU = SovereigntyPolicySpec.model_validate(
    yaml.safe_load((EXAMPLES / "sovereigntypolicy-eu.yaml").read_text())["spec"]
)


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


@pytest.mark.parametrize(
    ("uri", "host"),
    [
        ("s3://eu-data/path/train.jsonl", "eu-data"),
        ("pvc://claim/dir/file", "claim"),
        ("hf://mistralai/Mistral-7B-v0.3", "mistralai"),
        ("models:/support-assistant/3", "support-assistant"),
        ("models:/support-assistant@champion", "support-assistant"),
        ("file:///data/train.jsonl", "data"),
        ("file:///", ""),
    ],
)
def test_uri_host(uri: str, host: str) -> None:
    assert uri_host(uri) == host


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("*", "anything", True),
        ("*", "", True),
        ("eu-*", "eu-data", True),
        ("eu-*", "us-data", False),
        ("*-par", "models-par", True),
        ("*-par", "models-fra", False),
        ("mistralai", "mistralai", True),
        ("mistralai", "mistralai-evil", False),
    ],
)
def test_host_patterns(pattern: str, host: str, matches: bool) -> None:
    assert host_matches(pattern, host) is matches


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        ("s3://eu-datasets-par/x.jsonl", True),
        ("s3://us-datasets/x.jsonl", False),
        ("pvc://any-claim/x", True),
        ("hf://mistralai/x", False),  # hf is a model source, not storage
        ("file:///data/x", True),
    ],
)
def test_uri_allowed_against_storage(uri: str, allowed: bool) -> None:
    assert uri_allowed(uri, EU.allowed_storage) is allowed


def test_scheme_must_match_exactly() -> None:
    patterns = [UriPattern(scheme="s3", host="*")]
    assert uri_allowed("s3://b/k", patterns)
    assert not uri_allowed("s3a://b/k", patterns)


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("registry.eu-west-par.example.eu/sovai/train:1", True),
        ("registry.eu-central-fra.example.eu/ml/serve@sha256:abc", True),
        ("registry.eu-central-fra.example.eu/other/serve:1", False),
        ("registry.eu-west-par.example.eu.evil.example/train:1", False),
        ("python:3.12", False),
    ],
)
def test_image_allowed(image: str, allowed: bool) -> None:
    assert image_allowed(image, EU.allowed_registries) is allowed


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    requirement: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        requirement["values"] = list(values)
    return {"matchExpressions": [requirement]}


SELECTORS: list[tuple[dict[str, Any] | None, dict[str, str], bool]] = [
    (None, {}, True),
    ({}, {"team": "a"}, True),
    ({"matchLabels": {"team": "a"}}, {"team": "a"}, True),
    ({"matchLabels": {"team": "a"}}, {"team": "b"}, False),
    ({"matchLabels": {"team": "a"}}, {}, False),
    (expr("team", "In", "a", "b"), {"team": "b"}, True),
    (expr("team", "In", "a"), {}, False),
    (expr("team", "NotIn", "a"), {}, True),
    (expr("team", "NotIn", "a"), {"team": "a"}, False),
    (expr("regulated", "Exists"), {"regulated": ""}, True),
    (expr("regulated", "Exists"), {}, False),
    (expr("sandbox", "DoesNotExist"), {}, True),
    (expr("sandbox", "DoesNotExist"), {"sandbox": "1"}, False),
]


@pytest.mark.parametrize(("selector", "labels", "selected"), SELECTORS)
def test_selects_namespace(
    selector: dict[str, Any] | None, labels: dict[str, str], selected: bool
) -> None:
    policy = SovereigntyPolicySpec.model_validate(
        {"allowedRegions": ["eu-west-par"], "namespaceSelector": selector}
    )
    assert selects_namespace(policy, labels) is selected


@pytest.mark.parametrize(
    ("requested", "effective"),
    [
        (None, ["eu-west-par", "eu-central-fra"]),
        (["eu-central-fra"], ["eu-central-fra"]),
        (["us-east-1", "eu-west-par"], ["eu-west-par"]),
        (["us-east-1"], []),
    ],
)
def test_effective_regions(requested: list[str] | None, effective: list[str]) -> None:
    assert effective_regions(Placement(regions=requested), EU) == effective


def test_violation_is_exact() -> None:
    spec = FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": "hf://mistralai/x"},
            "dataset": {"trainingUri": "s3://us-data/train.jsonl"},
            "placement": {"regions": ["eu-west-par", "us-east-1"]},
        }
    )
    assert check_finetunejob(spec, EU, "eu-only") == [
        Violation(
            field="spec.placement.regions",
            message="spec.placement.regions: us-east-1 not allowed by SovereigntyPolicy "
            "eu-only; allowed regions: eu-west-par, eu-central-fra",
            allowed=("eu-west-par", "eu-central-fra"),
        ),
        Violation(
            field="spec.dataset.trainingUri",
            message="spec.dataset.trainingUri: s3://us-data/train.jsonl is not in "
            "allowedStorage of SovereigntyPolicy eu-only; allowed: s3://eu-* at scw-par, "
            "s3://fra-* at ovh-de, pvc://*, file://*",
            allowed=("s3://eu-* at scw-par", "s3://fra-* at ovh-de", "pvc://*", "file://*"),
        ),
    ]


def test_default_image_is_checked_when_spec_has_none() -> None:
    spec = FineTuneJobSpec.model_validate(
        {"baseModel": {"uri": "hf://mistralai/x"}, "dataset": {"trainingUri": "pvc://d/t"}}
    )
    assert check_finetunejob(spec, EU, "eu-only", default_image="docker.io/rayproject/ray:2") == [
        Violation(
            field="spec.execution.image",
            message="spec.execution.image: docker.io/rayproject/ray:2 (the operator's default "
            "image) is not in allowedRegistries of SovereigntyPolicy eu-only; allowed: "
            "registry.sovereign-ai.eu, registry.eu-west-par.example.eu, "
            "registry.eu-central-fra.example.eu/ml",
            allowed=(
                "registry.sovereign-ai.eu",
                "registry.eu-west-par.example.eu",
                "registry.eu-central-fra.example.eu/ml",
            ),
        )
    ]
    allowed_default = "registry.eu-west-par.example.eu/sovai/train:1"
    assert check_finetunejob(spec, EU, "eu-only", default_image=allowed_default) == []


def test_resolved_model_of_a_job_ref_is_checked() -> None:
    spec = ModelDeploymentSpec.model_validate({"model": {"fineTuneJobRef": {"name": "j"}}})
    assert check_modeldeployment(spec, EU, "eu-only", resolved_model_uri="models:/m/1") == []
    [violation] = check_modeldeployment(spec, EU, "eu-only", resolved_model_uri="hf://meta-llama/x")
    assert violation.field == "spec.model.fineTuneJobRef"


def test_the_base_an_adapter_is_served_on_is_checked() -> None:
    ref = ModelDeploymentSpec.model_validate({"model": {"fineTuneJobRef": {"name": "j"}}})

    def check(base: str) -> list[Violation]:
        return check_modeldeployment(
            ref, EU, "eu-only", resolved_model_uri="models:/m/1", resolved_base_uri=base
        )

    assert check("hf://mistralai/m") == []
    [violation] = check("hf://meta-llama/x")
    assert violation.field == "spec.model.fineTuneJobRef"
    given = ModelDeploymentSpec.model_validate(
        {"model": {"uri": "models:/m/1", "baseModel": {"uri": "hf://meta-llama/x"}}}
    )
    [violation] = check_modeldeployment(given, EU, "eu-only")
    assert violation.field == "spec.model.baseModel.uri"


def check_example(document: dict[str, Any]) -> list[Violation]:
    if document["kind"] == "FineTuneJob":
        return check_finetunejob(FineTuneJobSpec.model_validate(document["spec"]), EU, "eu-only")
    spec = ModelDeploymentSpec.model_validate(document["spec"])
    return check_modeldeployment(spec, EU, "eu-only")


VALID = sorted(p for p in EXAMPLES.glob("*.yaml") if load(p)["kind"] != "SovereigntyPolicy")


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_examples_pass_the_sample_policy(path: Path) -> None:
    assert check_example(load(path)) == []


ADMISSION = sorted(
    p for p in (EXAMPLES / "invalid").glob("*.yaml") if "# layer: admission" in p.read_text()
)


@pytest.mark.parametrize("path", ADMISSION, ids=lambda p: p.name)
def test_operator_says_what_admission_says(path: Path) -> None:
    """Each admission example's expected message comes out of the Python twin verbatim."""
    text = path.read_text()
    expect = next(line for line in text.splitlines() if line.startswith("# expect: "))[10:]
    violations = check_example(yaml.safe_load(text))
    assert any(expect in v.message for v in violations), [v.message for v in violations]


# -- places: where each URI goes ---------------------------------------------------------------

TRACKING = "http://mlflow.mlflow.svc:5000"


def job(**spec: Any) -> FineTuneJobSpec:
    base = {"baseModel": {"uri": "s3://eu-models/tiny"}, "dataset": {"trainingUri": "pvc://d/t"}}
    return FineTuneJobSpec.model_validate(base | spec)


def test_each_uri_resolves_to_the_endpoint_its_pattern_names() -> None:
    spec = job(
        dataset={"trainingUri": "s3://eu-data/train.jsonl"}, output={"uri": "s3://fra-out/m"}
    )
    platform = Platform(mlflow_tracking_uri=TRACKING)
    assert check_finetunejob(spec, EU, "eu-only", platform=platform) == []
    places = [
        f"{p.field}: {p.uri} -> {p.storage_endpoint} ({p.url}, {p.region})"
        for p in finetunejob_places(spec, EU, platform)
    ]
    assert places == [
        "spec.baseModel.uri: s3://eu-models/tiny -> scw-par (https://s3.fr-par.scw.cloud, "
        "eu-west-par)",
        "spec.dataset.trainingUri: s3://eu-data/train.jsonl -> scw-par "
        "(https://s3.fr-par.scw.cloud, eu-west-par)",
        "spec.output.uri: s3://fra-out/m -> ovh-de (https://s3.de.io.cloud.ovh.net, "
        "eu-central-fra)",
        f"SOVAI_MLFLOW_TRACKING_URI: {TRACKING} -> mlflow ({TRACKING}, eu-west-par)",
    ]


def test_an_undeclared_tracking_server_is_refused_naming_the_setting() -> None:
    platform = Platform(mlflow_tracking_uri="https://mlflow.us.example.com")
    violations = check_finetunejob(job(), EU, "eu-only", platform=platform)
    assert [v.field for v in violations] == ["SOVAI_MLFLOW_TRACKING_URI"]
    assert violations[0].message.startswith(
        "SOVAI_MLFLOW_TRACKING_URI: https://mlflow.us.example.com is not declared in "
        "storageEndpoints of SovereigntyPolicy eu-only"
    )
    assert "declared endpoints: scw-par (https://s3.fr-par.scw.cloud)" in violations[0].message


@pytest.mark.parametrize(
    ("url", "declared"),
    [
        (TRACKING, True),
        (TRACKING + "/", True),
        (TRACKING + "/api", True),
        ("http://mlflow.mlflow.svc:5001", False),
        ("https://mlflow.mlflow.svc:5000", False),
        ("http://evil@mlflow.mlflow.svc:5000", False),
        ("http://mlflow.mlflow.svc.evil.example:5000", False),
    ],
)
def test_tracking_urls_match_scheme_host_port_and_path(url: str, declared: bool) -> None:
    assert (tracking_endpoint(url, EU) is not None) is declared


def test_models_uris_resolve_to_the_tracking_server() -> None:
    platform = Platform(mlflow_tracking_uri=TRACKING)
    spec = job(baseModel={"uri": "models:/chat/3"})
    place = finetunejob_places(spec, EU, platform)[0]
    assert (place.field, place.storage_endpoint) == ("spec.baseModel.uri", "mlflow")


def test_hf_needs_a_mirror_when_the_hub_is_online() -> None:
    spec = job(baseModel={"uri": "hf://mistralai/tiny"})
    assert check_finetunejob(spec, EU, "eu-only") == []
    online = check_finetunejob(spec, EU, "eu-only", platform=Platform(hf_hub_offline=False))
    assert [v.field for v in online] == ["spec.baseModel.uri"]
    assert "names no mirror endpoint" in online[0].message


def test_an_s3_pattern_without_endpoint_resolves_nowhere() -> None:
    """The CRD refuses such a policy; one stored before that rule is refused here."""
    legacy = EU.model_copy(
        update={"allowed_storage": [UriPattern.model_construct(scheme=UriScheme.S3, host="*")]}
    )
    violations = check_finetunejob(job(dataset={"trainingUri": "s3://eu-data/t"}), legacy, "old")
    assert [v.field for v in violations] == ["spec.dataset.trainingUri"]
    assert "names no endpoint (an s3 entry must say where its buckets live)" in (
        violations[0].message
    )


def test_routes_carry_each_lists_s3_entries_in_order() -> None:
    document = json.loads(routes_document(EU))
    assert [r["buckets"] + "@" + r["endpoint"] for r in document["storage"]] == [
        "eu-*@scw-par",
        "fra-*@ovh-de",
    ]
    assert [r["url"] for r in document["modelSources"]] == ["https://s3.fr-par.scw.cloud"]


def test_an_online_hub_goes_to_the_declared_mirror() -> None:
    mirrored = EU.model_copy(
        update={
            "storage_endpoints": [
                *EU.storage_endpoints,
                StorageEndpoint(name="hf-eu", url="https://hf.mirror.eu", region="eu-west-par"),
            ],
            "allowed_model_sources": [
                UriPattern(scheme=UriScheme.HF, host="mistralai", endpoint="hf-eu")
            ],
        }
    )
    online = Platform(hf_hub_offline=False)
    spec = job(baseModel={"uri": "hf://mistralai/tiny"})
    assert check_finetunejob(spec, mirrored, "eu-only", platform=online) == []
    places = finetunejob_places(spec, mirrored, online)
    assert hub_mirror(places) == "https://hf.mirror.eu"
