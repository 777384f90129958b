"""Inputs of the builders besides the spec: who owns the children, where they may run, and the
operator-wide defaults. Plain frozen dataclasses so that builders stay pure and testable."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api.v1alpha1.common import API_VERSION
from ..policy.places import EMPTY_ROUTES

LABEL_PREFIX = "sovereign-ai.eu"
JOB_UID_LABEL = f"{LABEL_PREFIX}/job-uid"
JOB_NAME_LABEL = f"{LABEL_PREFIX}/finetunejob"
COMPONENT_LABEL = f"{LABEL_PREFIX}/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "sovereign-ai-operator"
SPEC_HASH_ANNOTATION = f"{LABEL_PREFIX}/spec-hash"
QUEUE_NAME_LABEL = "kueue.x-k8s.io/queue-name"

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


@dataclass(frozen=True)
class Owner:
    """The object that owns the children (a FineTuneJob)."""

    name: str
    namespace: str
    uid: str
    kind: str = "FineTuneJob"
    api_version: str = API_VERSION

    def reference(self) -> dict[str, object]:
        """An ownerReference making the owner the controller, so deletion cascades."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class Residency:
    """Where the job may run: the bound policy, its region label, allowed ∩ requested regions."""

    policy_name: str
    region_label: str
    regions: tuple[str, ...]
    # SOVAI_S3_ROUTES (policy.places.routes_document): the only S3 endpoints the pods may use.
    s3_routes: str = EMPTY_ROUTES
    # HF_ENDPOINT: the declared Hugging Face mirror of the hf:// URIs, if any (places.hub_mirror).
    hub_mirror: str = ""


@dataclass(frozen=True)
class BuildConfig:
    """Operator-wide defaults the builders need (taken from Settings by the caller)."""

    runtime_image: str
    mlflow_tracking_uri: str | None = None
    mlflow_secret_name: str | None = None
    hf_hub_offline: bool = True
    head_cpu: str = "2"
    head_memory: str = "8Gi"
    ray_version: str = "2.60.0"
    training_command: str = "python -m sovereign_training train"
    extra_env: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def spec_hash(spec: Mapping[str, Any]) -> str:
    """A digest of a child's desired spec, recorded on the child as SPEC_HASH_ANNOTATION: a
    pass whose digest matches the live child's has nothing to send."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
