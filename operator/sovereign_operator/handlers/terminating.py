"""Finalizing FineTuneJobs and ModelDeployments in a namespace that is being deleted, when the
operator watches a list of namespaces (SOVAI_NAMESPACES).

Kopf stops watching such a namespace once it is terminating (as soon as the namespace has
conditions and none of them is True), and an operator started later never watches it at all.
Kopf's delete handlers then never run there, our finalizer stays on the objects, and the
namespace is never deleted. The follow-up sweep does Kopf's part for them: the same cleanup as
the delete handlers, then the finalizer comes off. In the cluster-wide mode Kopf watches every
namespace to the end, and this does nothing.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

import kopf

from ..api.v1alpha1.common import FINALIZER
from ..k8s.client import FINETUNEJOB, MODELDEPLOYMENT, ApiError, Kind, Kube
from . import finetunejob, modeldeployment
from .state import OperatorState

log = logging.getLogger(__name__)


async def terminating_namespaces(name: str, **_: Any) -> dict[str, bool]:
    """Namespaces marked for deletion (registered with a `when` filter on that mark)."""
    return {name: True}


def is_terminating(meta: kopf.Meta, **_: Any) -> bool:
    return bool(meta.get("deletionTimestamp"))


def watched(namespace: str, patterns: Sequence[str]) -> bool:
    """Whether Kopf's namespace patterns (globs, "!" to exclude) select ``namespace``."""
    included = any(fnmatch.fnmatchcase(namespace, p) for p in patterns if not p.startswith("!"))
    excluded = any(fnmatch.fnmatchcase(namespace, p[1:]) for p in patterns if p.startswith("!"))
    return included and not excluded


def without_finalizer(kube: Kube, kind: Kind, obj: dict[str, Any]) -> bool:
    """Remove our finalizer, only from the version read (a concurrent change wins, and the
    next sweep looks again); True when it came off."""
    meta = obj["metadata"]
    remaining = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
    patch = {"metadata": {"finalizers": remaining, "resourceVersion": meta["resourceVersion"]}}
    try:
        kube.merge_patch(kind, meta["namespace"], meta["name"], patch)
    except ApiError as error:
        if error.status in (404, 409):
            return False
        raise
    return True


def finalize_terminating(state: OperatorState) -> int:
    """One pass over the watched namespaces being deleted; returns how many objects were
    finalized."""
    patterns = state.settings.namespaces
    index = state.indexes.get("sovai_terminating")
    if not patterns or not index:
        return 0
    cleanups: tuple[tuple[Kind, Callable[[kopf.Body], None]], ...] = (
        (
            FINETUNEJOB,
            lambda body: finetunejob.cleanup(state, body, state.indexes.get("sovai_policies")),
        ),
        (MODELDEPLOYMENT, lambda body: modeldeployment.cleanup(state, body)),
    )
    done = 0
    for namespace in [ns for ns in list(index) if watched(ns, patterns)]:
        for kind, cleanup in cleanups:
            for obj in state.kube.list(kind, namespace):
                meta = obj.get("metadata") or {}
                if not meta.get("deletionTimestamp") or FINALIZER not in (
                    meta.get("finalizers") or []
                ):
                    continue
                cleanup(kopf.Body(cast(kopf.RawBody, obj)))
                if without_finalizer(state.kube, kind, obj):
                    log.info("finalized %s %s/%s", kind.plural, namespace, meta.get("name"))
                    done += 1
    return done
