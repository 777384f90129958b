"""The three CustomResourceDefinitions, built from the API models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ..api.v1alpha1 import finetunejob, modeldeployment, sovereigntypolicy
from ..api.v1alpha1.common import CATEGORY, GROUP, VERSION
from .schema import Schema, model_schema

PART_OF_LABELS = {"app.kubernetes.io/part-of": "sovereign-ai-operator"}


@dataclass(frozen=True)
class Kind:
    """What a CRD needs besides the schema."""

    kind: str
    plural: str
    short_name: str
    namespaced: bool
    spec: type[BaseModel]
    status: type[BaseModel] | None
    description: str
    printer_columns: list[dict[str, Any]]
    root_rules: list[dict[str, str]] = field(default_factory=list)
    selectable_fields: list[str] = field(default_factory=list)


def _column(
    name: str, json_path: str, kind: str = "string", description: str = "", priority: int = 0
) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": kind, "jsonPath": json_path}
    if description:
        column["description"] = description
    if priority:
        column["priority"] = priority
    return column


AGE = _column("Age", ".metadata.creationTimestamp", "date")


# What may change once a job has started: stopping it for a while, or for good.
MUTABLE_AFTER_START = ("suspend", "cancel")


def started_job_immutable_rule(spec_model: type[BaseModel]) -> dict[str, str]:
    """A transition rule on the whole object: once status.startTime is set, every spec field
    but suspend and cancel keeps its old value.

    It sits on the root because only there can a rule see status; "started" is
    status.startTime, which the operator writes when it submits the backend job.
    """
    checks = []
    for name, info in spec_model.model_fields.items():
        alias = info.alias or name
        if alias in MUTABLE_AFTER_START:
            continue
        new, old = f"self.spec.{alias}", f"oldSelf.spec.{alias}"
        # Fields with a default are always present (the API server fills them in).
        if info.is_required() or info.default is not None or info.default_factory is not None:
            checks.append(f"{new} == {old}")
        else:
            checks.append(f"(has({new}) == has({old}) && (!has({new}) || {new} == {old}))")
    return {
        "rule": "!has(oldSelf.status) || !has(oldSelf.status.startTime) || ("
        + " && ".join(checks)
        + ")",
        "message": (
            "spec of a started FineTuneJob is immutable except spec.suspend and spec.cancel "
            "(status.startTime is set); create a new FineTuneJob instead"
        ),
        "reason": "FieldValueForbidden",
        "fieldPath": ".spec",
    }


KINDS: list[Kind] = [
    Kind(
        kind=finetunejob.KIND,
        plural=finetunejob.PLURAL,
        short_name="ftj",
        namespaced=True,
        spec=finetunejob.FineTuneJobSpec,
        status=finetunejob.FineTuneJobStatus,
        description=(
            "FineTuneJob fine-tunes a base model on a dataset with Ray Train, only on nodes in "
            "regions a SovereigntyPolicy allows, and registers the result in MLflow."
        ),
        printer_columns=[
            # What an ML engineer watches (`kubectl get ftj -w`): phase, progress, loss, ETA.
            _column("Phase", ".status.phase", description="Lifecycle phase."),
            _column("Progress", ".status.progress.percentage", "integer", "Percent of steps done."),
            _column("Loss", ".status.progress.trainLoss", "number", "Latest training loss."),
            _column(
                "ETA", ".status.progress.estimatedRemainingSeconds", "integer", "Seconds left."
            ),
            _column("Region", ".status.placement[0].region", description="Where it runs."),
            AGE,
            _column("Method", ".spec.method.type", description="full or lora.", priority=1),
            _column("Base Model", ".spec.baseModel.uri", description="Base model URI.", priority=1),
            _column("Model", ".status.fineTunedModel", description="Fine-tuned model.", priority=1),
        ],
        root_rules=[started_job_immutable_rule(finetunejob.FineTuneJobSpec)],
        selectable_fields=[".spec.method.type", ".status.phase"],
    ),
    Kind(
        kind=modeldeployment.KIND,
        plural=modeldeployment.PLURAL,
        short_name="mdep",
        namespaced=True,
        spec=modeldeployment.ModelDeploymentSpec,
        status=modeldeployment.ModelDeploymentStatus,
        description=(
            "ModelDeployment serves a model as an OpenAI-compatible endpoint, only on nodes in "
            "regions a SovereigntyPolicy allows."
        ),
        printer_columns=[
            _column("Phase", ".status.phase", description="Lifecycle phase."),
            _column("Model", ".status.modelUri", description="Model being served."),
            _column("Ready", ".status.readyReplicas", "integer", "Ready replicas."),
            _column("URL", ".status.url", description="Base URL of the API."),
            _column("Runtime", ".spec.runtime", description="vllm or transformers.", priority=1),
            _column(
                "Region", ".status.placement[0].region", description="Where it runs.", priority=1
            ),
            AGE,
        ],
        selectable_fields=[".status.phase"],
    ),
    Kind(
        kind=sovereigntypolicy.KIND,
        plural=sovereigntypolicy.PLURAL,
        short_name="sovpol",
        namespaced=False,
        spec=sovereigntypolicy.SovereigntyPolicySpec,
        status=None,
        description=(
            "SovereigntyPolicy (cluster-scoped) says where FineTuneJobs and ModelDeployments in "
            "the namespaces it selects may run, and which data, models, images, networks and "
            "Ray clusters they may use. Enforced at admission and again by the operator."
        ),
        printer_columns=[
            _column("Regions", ".spec.allowedRegions", description="Allowed regions."),
            _column("Region Label", ".spec.regionLabel", description="Node label.", priority=1),
            AGE,
        ],
    ),
]


def _root_schema(kind: Kind) -> Schema:
    properties: dict[str, Schema] = {
        "apiVersion": {
            "description": "APIVersion defines the versioned schema of this representation "
            "of an object.",
            "type": "string",
        },
        "kind": {
            "description": "Kind is a string value representing the REST resource this "
            "object represents.",
            "type": "string",
        },
        "metadata": {"type": "object"},
        "spec": model_schema(kind.spec),
    }
    if kind.status is not None:
        properties["status"] = model_schema(kind.status)
    root: Schema = {
        "description": kind.description,
        "type": "object",
        "properties": properties,
        "required": ["spec"],
    }
    if kind.root_rules:
        root["x-kubernetes-validations"] = list(kind.root_rules)
    return root


def build_crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition manifest of one kind."""
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "additionalPrinterColumns": kind.printer_columns,
        "schema": {"openAPIV3Schema": _root_schema(kind)},
    }
    if kind.status is not None:
        version["subresources"] = {"status": {}}
    if kind.selectable_fields:
        version["selectableFields"] = [{"jsonPath": p} for p in kind.selectable_fields]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{GROUP}", "labels": dict(PART_OF_LABELS)},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": [kind.short_name],
                "categories": [CATEGORY],
            },
            "scope": "Namespaced" if kind.namespaced else "Cluster",
            "versions": [version],
        },
    }
