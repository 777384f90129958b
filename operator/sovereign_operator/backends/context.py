"""What a backend is given to reconcile one job."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..api.v1alpha1.finetunejob import FineTuneJobSpec, FineTuneJobStatus, ResolvedHyperparameters
from ..api.v1alpha1.sovereigntypolicy import SovereigntyPolicySpec
from ..builders.context import BuildConfig, Owner, Residency
from .pods import PodFacts


@dataclass(frozen=True)
class JobContext:
    """One FineTuneJob, validated, with the cached views of its children."""

    spec: FineTuneJobSpec
    owner: Owner
    generation: int
    residency: Residency
    hyperparameters: ResolvedHyperparameters
    policy: SovereigntyPolicySpec
    build: BuildConfig
    previous: FineTuneJobStatus | None
    live_rayjob: dict[str, Any] | None = None
    pods: tuple[PodFacts, ...] = field(default_factory=tuple)
    # The audit chain's head when the job was submitted; job.json carries it (audit.chainHead)
    # into the model card and the MLflow tags. It must stay the same for the job's life: it is
    # in job.json, whose digest is in the RayJob's hash.
    chain_head: str | None = None
