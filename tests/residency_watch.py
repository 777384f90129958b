"""A residency watcher for a whole test tier: every pod the operator's children make, on any
node, is recorded while the tier runs, and the tier fails if one was ever bound to a node
outside the regions it was allowed.

"Allowed" is checked twice: the pod's own required node affinity on the region label (what
the operator pinned it to), and the allowed regions of the SovereigntyPolicies that existed
while it ran (what the operator was supposed to pin it to). A pod without such an affinity is
a violation too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

REGION_LABEL = "topology.kubernetes.io/region"
MANAGED = "app.kubernetes.io/managed-by=sovereign-ai-operator"


@dataclass(frozen=True)
class BoundPod:
    namespace: str
    name: str
    node: str
    region: str | None  # the node's region when the pod was seen bound to it
    pinned: tuple[str, ...] | None  # the required affinity's regions; None when it has none


def pinned_regions(pod: Any) -> tuple[str, ...] | None:
    affinity = pod.spec.affinity
    required = (
        affinity.node_affinity.required_during_scheduling_ignored_during_execution
        if affinity and affinity.node_affinity
        else None
    )
    if required is None:
        return None
    regions: set[str] = set()
    for term in required.node_selector_terms or []:
        for expression in term.match_expressions or []:
            if expression.key == REGION_LABEL and expression.operator == "In":
                regions.update(expression.values or [])
    return tuple(sorted(regions)) if regions else None


class ResidencyWatch:
    """Watches pods and SovereigntyPolicies of one cluster in two threads until stopped."""

    def __init__(self, kubeconfig: Path, selector: str = MANAGED) -> None:
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.selector = selector
        self.pods: dict[tuple[str, str, str], BoundPod] = {}
        self._regions: dict[str, str | None] = {}
        self.allowed: set[str] = set()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch_pods, name="residency-pods", daemon=True),
            threading.Thread(target=self._watch_policies, name="residency-policies", daemon=True),
        ]

    def __enter__(self) -> ResidencyWatch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()

    def _stream(self, call: Any, handle: Any, **kwargs: Any) -> None:
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(call, timeout_seconds=5, **kwargs):
                    handle(event["object"])
                    if self._stop.is_set():
                        stream.stop()
            except Exception:  # the API server restarts in some tests: watch again
                self._stop.wait(1)

    def _watch_pods(self) -> None:
        core = client.CoreV1Api(self.api)

        def record(pod: Any) -> None:
            node = pod.spec.node_name
            if node:
                if node not in self._regions:  # nodes come and go rarely: read them on a miss
                    for item in core.list_node().items:
                        # A node read from the API server always has its metadata and name.
                        assert item.metadata is not None
                        assert item.metadata.name is not None
                        labels = item.metadata.labels or {}
                        self._regions[item.metadata.name] = labels.get(REGION_LABEL)
                key = (pod.metadata.namespace, pod.metadata.name, node)
                self.pods[key] = BoundPod(*key, self._regions.get(node), pinned_regions(pod))

        self._stream(core.list_pod_for_all_namespaces, record, label_selector=self.selector)

    def _watch_policies(self) -> None:
        custom = client.CustomObjectsApi(self.api)

        def record(policy: dict[str, Any]) -> None:
            self.allowed.update((policy.get("spec") or {}).get("allowedRegions") or [])

        self._stream(
            custom.list_cluster_custom_object,
            record,
            group="sovereign-ai.eu",
            version="v1alpha1",
            plural="sovereigntypolicies",
        )

    def violations(self) -> list[str]:
        """Every recorded pod bound outside its pinned regions or the policies' regions."""
        found = []
        for pod in list(self.pods.values()):
            region = pod.region
            where = f"pod {pod.namespace}/{pod.name} on node {pod.node} (region {region})"
            if pod.pinned is None:
                found.append(f"{where} has no required node affinity on {REGION_LABEL}")
            elif region not in pod.pinned:
                found.append(f"{where} is outside its pinned regions {list(pod.pinned)}")
            elif region not in self.allowed:
                found.append(f"{where} is outside every policy's regions {sorted(self.allowed)}")
        return found
