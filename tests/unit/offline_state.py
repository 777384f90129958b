"""The operator's shared state with a client that is never called, for pure logic and metrics."""

from __future__ import annotations

from kubernetes.client import Configuration

from sovereign_operator.backends.kuberay import KubeRayBackend
from sovereign_operator.backends.raycluster import RayClusterBackend
from sovereign_operator.config import Settings
from sovereign_operator.handlers.state import OperatorState
from sovereign_operator.k8s.client import Kube
from sovereign_operator.main import build_config
from sovereign_operator.metrics import Metrics


def offline_state() -> OperatorState:
    """An OperatorState whose client points at a closed port: a test that reaches it fails."""
    settings = Settings()
    kube = Kube(lambda: Configuration(host="https://127.0.0.1:9"), pool_size=1)
    return OperatorState(
        settings=settings,
        kube=kube,
        metrics=Metrics(),
        build=build_config(settings),
        kuberay=KubeRayBackend(kube),
        raycluster=RayClusterBackend(kube, "python -m x", None, True),
    )
