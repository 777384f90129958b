"""The local control plane used by the integration tests, `make dev-cluster` and `make demo`."""

from .binaries import BinariesUnavailableError, ensure_binaries, find_binaries
from .cluster import LocalCluster
from .nodes import DEFAULT_NODES, FakeNode
from .processes import ClusterStartError

__all__ = [
    "DEFAULT_NODES",
    "BinariesUnavailableError",
    "ClusterStartError",
    "FakeNode",
    "LocalCluster",
    "ensure_binaries",
    "find_binaries",
]
