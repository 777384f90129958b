"""The pydantic -> structural schema conversion, and the shape of each CRD."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from sovereign_operator.crdgen.crds import KINDS, build_crd, started_job_immutable_rule
from sovereign_operator.crdgen.schema import SchemaError, model_schema


class Inner(BaseModel):
    """Inner docstring."""

    size: int = Field(default=1, ge=1, description="A size.")


class Sample(BaseModel):
    """Sample docstring."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="A name.", max_length=5)
    count: Annotated[int, Field(ge=1, le=9)] | Literal["auto"] = Field(
        default="auto", description="A count."
    )
    ratio: float = Field(default=0.5, gt=0, description="A ratio.")
    inner: Inner = Field(default_factory=Inner, description="Defaulted object.")
    maybe: Inner | None = Field(default=None, description="Optional object.")
    tags: dict[str, str] | None = Field(default=None, description="Tags.")


def test_conversion_is_inline_structural_and_exact() -> None:
    assert model_schema(Sample) == {
        "description": "Sample docstring.",
        "type": "object",
        "properties": {
            "name": {"description": "A name.", "type": "string", "maxLength": 5},
            "count": {
                "description": "A count.",
                "default": "auto",
                "minimum": 1,
                "maximum": 9,
                "pattern": "^auto$",
                "x-kubernetes-int-or-string": True,
                "anyOf": [{"type": "integer"}, {"type": "string"}],
            },
            "ratio": {
                "description": "A ratio.",
                "type": "number",
                "default": 0.5,
                "minimum": 0,
                "exclusiveMinimum": True,
            },
            "inner": {
                "description": "Defaulted object.",
                "type": "object",
                "default": {},
                "properties": {
                    "size": {
                        "description": "A size.",
                        "type": "integer",
                        "default": 1,
                        "minimum": 1,
                    }
                },
            },
            "maybe": {
                "description": "Optional object.",
                "type": "object",
                "properties": {
                    "size": {
                        "description": "A size.",
                        "type": "integer",
                        "default": 1,
                        "minimum": 1,
                    }
                },
            },
            "tags": {
                "description": "Tags.",
                "type": "object",
                "additionalProperties": {"type": "string"},
            },
        },
        "required": ["name"],
    }


class NumberOrString(BaseModel):
    value: float | str = Field(description="No structural form without a CEL rule.")


def test_number_or_string_without_a_rule_is_refused() -> None:
    with pytest.raises(SchemaError, match="needs a CEL rule"):
        model_schema(NumberOrString)


def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


SCHEMAS = {k.kind: build_crd(k)["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for k in KINDS}


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_every_field_is_described_typed_and_ref_free(kind: str) -> None:
    for path, node in walk(SCHEMAS[kind]["properties"]["spec"], "spec"):
        assert not {"$ref", "allOf", "title"} & set(node), path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert "anyOf" not in node, path
            assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}
        if not path.endswith("[]") and not path.endswith("{}"):
            assert node.get("description"), f"{path} has no description"


@pytest.mark.parametrize("kind", ["FineTuneJob", "ModelDeployment"])
def test_every_status_field_is_described(kind: str) -> None:
    for path, node in walk(SCHEMAS[kind]["properties"]["status"], "status"):
        if not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description"


def column_names(kind: str) -> list[str]:
    crd = build_crd(next(k for k in KINDS if k.kind == kind))
    return [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]


def test_printer_columns() -> None:
    assert column_names("FineTuneJob") == [
        "Phase",
        "Progress",
        "Loss",
        "ETA",
        "Region",
        "Age",
        "Method",
        "Base Model",
        "Model",
    ]
    assert column_names("ModelDeployment") == [
        "Phase",
        "Model",
        "Ready",
        "URL",
        "Runtime",
        "Region",
        "Age",
    ]


@pytest.mark.parametrize(
    ("kind", "short", "scope", "status"),
    [
        ("FineTuneJob", "ftj", "Namespaced", True),
        ("ModelDeployment", "mdep", "Namespaced", True),
        ("SovereigntyPolicy", "sovpol", "Cluster", False),
    ],
)
def test_names_scope_and_subresources(kind: str, short: str, scope: str, status: bool) -> None:
    crd = build_crd(next(k for k in KINDS if k.kind == kind))
    assert crd["spec"]["group"] == "sovereign-ai.eu"
    assert crd["spec"]["names"]["shortNames"] == [short]
    assert crd["spec"]["names"]["categories"] == ["sovereign-ai"]
    assert crd["spec"]["scope"] == scope
    version = crd["spec"]["versions"][0]
    assert (version.get("subresources") == {"status": {}}) is status


class TwoFields(BaseModel):
    must: str = Field(description="required")
    maybe: str | None = Field(default=None, description="optional")
    suspend: bool = Field(default=False, description="mutable")
    knob: int = Field(default=1, description="defaulted")


def test_immutability_rule_covers_every_field_but_suspend() -> None:
    rule = started_job_immutable_rule(TwoFields)
    assert rule == {
        "rule": "!has(oldSelf.status) || !has(oldSelf.status.startTime) || ("
        "self.spec.must == oldSelf.spec.must && "
        "(has(self.spec.maybe) == has(oldSelf.spec.maybe) && "
        "(!has(self.spec.maybe) || self.spec.maybe == oldSelf.spec.maybe)) && "
        "self.spec.knob == oldSelf.spec.knob)",
        "message": "spec of a started FineTuneJob is immutable except spec.suspend and spec.cancel "
        "(status.startTime is set); create a new FineTuneJob instead",
        "reason": "FieldValueForbidden",
        "fieldPath": ".spec",
    }
