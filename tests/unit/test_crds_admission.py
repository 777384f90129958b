"""The admission policies: bindings, and every rule covered by an invalid example."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sovereign_operator.crdgen.admission import (
    build_admission,
    finetunejob_checks,
    modeldeployment_checks,
)
from sovereign_operator.crdgen.crds import KINDS, build_crd

INVALID = Path(__file__).resolve().parents[2] / "examples" / "invalid"


def header(path: Path, key: str) -> str:
    for line in path.read_text().splitlines():
        if line.startswith(f"# {key}: "):
            return line.split(": ", 1)[1]
    raise AssertionError(f"{path.name} has no '# {key}:' line")


EXPECTS = {p.name: (header(p, "layer"), header(p, "expect")) for p in INVALID.glob("*.yaml")}


def test_every_invalid_example_says_its_layer_and_error() -> None:
    assert len(EXPECTS) >= 30
    assert {layer for layer, _ in EXPECTS.values()} == {"schema", "cel", "admission"}


def test_bindings_fail_closed_on_create_and_open_on_update() -> None:
    documents = build_admission()
    bindings = {
        d["metadata"]["name"]: d["spec"]
        for d in documents
        if d["kind"] == "ValidatingAdmissionPolicyBinding"
    }
    assert sorted(bindings) == [
        "finetunejobs.sovereign-ai.eu-create",
        "finetunejobs.sovereign-ai.eu-update",
        "modeldeployments.sovereign-ai.eu-create",
        "modeldeployments.sovereign-ai.eu-update",
    ]
    assert bindings["finetunejobs.sovereign-ai.eu-create"] == {
        "policyName": "finetunejobs.sovereign-ai.eu",
        "paramRef": {"selector": {}, "parameterNotFoundAction": "Deny"},
        "matchResources": {
            "resourceRules": [
                {
                    "apiGroups": ["sovereign-ai.eu"],
                    "apiVersions": ["v1alpha1"],
                    "operations": ["CREATE"],
                    "resources": ["finetunejobs"],
                }
            ]
        },
        "validationActions": ["Deny"],
    }
    update = bindings["modeldeployments.sovereign-ai.eu-update"]
    assert update["paramRef"]["parameterNotFoundAction"] == "Allow"
    assert update["matchResources"]["resourceRules"][0]["operations"] == ["UPDATE"]


def test_policies_take_sovereignty_policy_params_and_skip_metadata_updates() -> None:
    policies = [d for d in build_admission() if d["kind"] == "ValidatingAdmissionPolicy"]
    assert [p["metadata"]["name"] for p in policies] == [
        "finetunejobs.sovereign-ai.eu",
        "modeldeployments.sovereign-ai.eu",
    ]
    for policy in policies:
        spec = policy["spec"]
        assert spec["paramKind"] == {
            "apiVersion": "sovereign-ai.eu/v1alpha1",
            "kind": "SovereigntyPolicy",
        }
        assert spec["failurePolicy"] == "Fail"
        assert spec["matchConditions"] == [
            {
                "name": "spec-created-or-changed",
                "expression": "request.operation == 'CREATE' || object.spec != oldObject.spec",
            }
        ]
        for validation in spec["validations"]:
            assert validation["message"].startswith("spec.")
            assert validation["messageExpression"].startswith("'spec.")


def cel_rules(node: Any) -> Iterator[dict[str, str]]:
    if isinstance(node, dict):
        yield from node.get("x-kubernetes-validations", [])
        for value in node.values():
            yield from cel_rules(value)
    elif isinstance(node, list):
        for item in node:
            yield from cel_rules(item)


CEL_MESSAGES = sorted(
    {rule["message"] for kind in KINDS for rule in cel_rules(build_crd(kind)["spec"])}
)
# Covered by tests/integration/test_api.py, which needs state an example cannot carry.
COVERED_ELSEWHERE = {
    "spec of a started FineTuneJob is immutable except spec.suspend and spec.cancel "
    "(status.startTime is set); create a new FineTuneJob instead",
    "spec.cancel cannot be set back to false: a cancelled FineTuneJob stays cancelled; "
    "create a new FineTuneJob instead",
}


def test_rules_covered_elsewhere_still_exist() -> None:
    assert set(CEL_MESSAGES) >= COVERED_ELSEWHERE
    assert "spec.placement.policyRef" in ADMISSION_FIELDS_ALL


@pytest.mark.parametrize("message", sorted(set(CEL_MESSAGES) - COVERED_ELSEWHERE))
def test_every_cel_rule_has_an_invalid_example(message: str) -> None:
    hits = [n for n, (layer, expect) in EXPECTS.items() if layer == "cel" and expect in message]
    assert hits, f"no examples/invalid/*.yaml with layer cel expects: {message}"


ADMISSION_FIELDS_ALL = {
    c.message_expression.split(":", 1)[0].strip("'")
    for c in [*finetunejob_checks(), *modeldeployment_checks()]
}


# spec.placement.policyRef needs a second policy: tests/integration/test_api.py covers it.
@pytest.mark.parametrize("field", sorted(ADMISSION_FIELDS_ALL - {"spec.placement.policyRef"}))
def test_every_admission_check_has_an_invalid_example(field: str) -> None:
    hits = [
        n
        for n, (layer, expect) in EXPECTS.items()
        if layer == "admission" and expect.startswith(f"{field}: ")
    ]
    assert hits, f"no examples/invalid/*.yaml with layer admission expects {field}: ..."
