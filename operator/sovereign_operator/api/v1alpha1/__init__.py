"""sovereign-ai.eu/v1alpha1: FineTuneJob, ModelDeployment and SovereigntyPolicy.

Pure data: models, enums and the resolution of "auto" hyperparameters. No I/O.
"""

from .common import API_VERSION, CATEGORY, GROUP, VERSION, Condition, ConditionStatus
from .finetunejob import (
    FineTuneJob,
    FineTuneJobConditionType,
    FineTuneJobPhase,
    FineTuneJobSpec,
    FineTuneJobStatus,
    ResolvedHyperparameters,
)
from .hyperparameters import HyperparameterError, resolve_hyperparameters
from .modeldeployment import (
    ModelDeployment,
    ModelDeploymentConditionType,
    ModelDeploymentPhase,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
)
from .sovereigntypolicy import SovereigntyPolicy, SovereigntyPolicySpec

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "GROUP",
    "VERSION",
    "Condition",
    "ConditionStatus",
    "FineTuneJob",
    "FineTuneJobConditionType",
    "FineTuneJobPhase",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "HyperparameterError",
    "ModelDeployment",
    "ModelDeploymentConditionType",
    "ModelDeploymentPhase",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ResolvedHyperparameters",
    "SovereigntyPolicy",
    "SovereigntyPolicySpec",
    "resolve_hyperparameters",
]
