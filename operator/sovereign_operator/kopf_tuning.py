"""Adjustments to Kopf's defaults that matter with thousands of objects.

Each one removes work or memory that buys nothing: a write per object that is never read, a
deep copy of every object on every watch event, a log line per object per timer tick, and
TLS connections without bound.
Measured by bench/operator_scale.py (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from typing import Any, cast

import aiohttp
import kopf
from kopf._cogs.clients import watching as _kopf_watching

from .k8s.client import USER_AGENT


class StatusDiffBase(kopf.StatusDiffBaseStorage):
    """Kopf's diff-base in the status, built without copying what it then throws away.

    Kopf builds an object's essence (spec, labels, annotations, and the fields handlers watch,
    such as ``field="spec"``) on every watch event by deep-copying the whole object,
    managedFields and status included, and then deleting most of it. Here only the parts the
    essence keeps are handed to Kopf's build, which is otherwise unchanged. A watched field
    under metadata or status takes Kopf's own path.
    """

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        extra = list(extra_fields or ())
        if any(_top_level(path) in ("metadata", "status") for path in extra):
            return super().build(body=body, extra_fields=extra)
        slim = {key: value for key, value in body.items() if key not in ("metadata", "status")}
        metadata = body.get("metadata") or {}
        slim["metadata"] = {
            key: metadata[key] for key in ("labels", "annotations") if key in metadata
        }
        return super().build(body=kopf.Body(cast(kopf.RawBody, slim)), extra_fields=extra)


class DigestDiffBase(StatusDiffBase):
    """Kopf's diff-base kept as two short digests instead of the whole essence as JSON.

    Kopf stores what it last handled so that it can tell a change from a replay. The JSON
    copy of spec, labels and annotations it keeps by default doubles every object in etcd and
    fills ``kubectl describe`` with an unreadable line. The operator's handlers never read
    ``old`` or ``diff``: they only need to know whether the spec, or anything else in the
    essence, changed. So the digest of each is stored, and ``fetch`` rebuilds an essence from
    the object itself in which only the parts whose digest differs are replaced by a marker.
    Kopf then sees the same causes as before: creation (nothing stored), a spec change (a diff
    under ``spec``, which ``field="spec"`` handlers react to), a change elsewhere (a diff
    outside ``spec``, which they ignore) and a replay (no diff). A JSON value written by an
    earlier version is still read as Kopf's own.
    """

    PREFIX = "sha256:"
    MARKER = "sovereign-ai.eu/previous-digest"

    def __init__(self, *, field: str, progress: kopf.ProgressStorage) -> None:
        super().__init__(field=field)
        self._progress = progress
        # The fields the handlers watch beyond the essence, as Kopf last asked for them (the
        # same on every call for a resource); fetch rebuilds the essence with them.
        self._extra_fields: list[Any] = []

    def build(self, *, body: Any, extra_fields: Iterable[Any] | None = None) -> Any:
        self._extra_fields = list(extra_fields or ())
        return super().build(body=body, extra_fields=self._extra_fields)

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        spec, rest = _essence_digests(essence)
        *parents, name = self.field
        target = patch
        for key in parents:
            target = target.setdefault(key, {})
        target[name] = f"{self.PREFIX}{spec}.{rest}"

    def fetch(self, *, body: Any) -> Any:
        stored: Any = body
        for key in self.field:
            stored = stored.get(key) if isinstance(stored, Mapping) else None
        if not isinstance(stored, str):
            return None
        if not stored.startswith(self.PREFIX):
            return super().fetch(body=body)  # Kopf's JSON, written before digests
        spec_digest, _, rest_digest = stored.removeprefix(self.PREFIX).partition(".")
        built = self.build(body=body, extra_fields=self._extra_fields)
        essence = dict(cast(dict[str, Any], self._progress.clear(essence=built)))
        now_spec, now_rest = _essence_digests(essence)
        if now_spec != spec_digest:
            essence["spec"] = {self.MARKER: spec_digest}
        if now_rest != rest_digest:
            essence[self.MARKER] = rest_digest
        return essence


def _essence_digests(essence: Any) -> tuple[str, str]:
    """Digests of the essence's spec and of the rest of it (labels, annotations, ...)."""
    whole = dict(cast(dict[str, Any], essence))
    spec = whole.pop("spec", None)
    return _digest(spec), _digest(whole)


def _digest(value: Any) -> str:
    encoded = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def _top_level(path: Any) -> str:
    """The first key of a Kopf field path ("a.b" or ("a", "b"))."""
    if isinstance(path, str):
        return path.split(".", 1)[0]
    return str(path[0]) if path else ""


class ProgressAnnotations(kopf.AnnotationsProgressStorage):
    """Kopf's progress in annotations, without marking objects that keep no progress.

    Kopf marks an object as Kopf-managed (``<prefix>/kopf-managed``) the first time it stores
    a handler's progress, even when the same cycle purges that progress again because the
    handler succeeded at once. The mark alone then costs a write to every object. It is kept
    out of the patch unless a progress record stays with it; a handler that retries stores
    its record and the mark together, as Kopf would.
    """

    def purge(self, *, key: Any, body: Any, patch: Any) -> None:
        super().purge(key=key, body=body, patch=patch)
        metadata = patch.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        marker = f"{self.prefix}/kopf-managed"
        if marker not in annotations or marker in (body.metadata.annotations or {}):
            return
        prefix = f"{self.prefix}/"
        if any(name.startswith(prefix) and name != marker for name in annotations):
            return  # a record (or its removal) is written anyway: the mark goes with it
        del annotations[marker]
        if not annotations:
            metadata.pop("annotations", None)
        if not metadata:
            patch.pop("metadata", None)


class QuietTimerSuccesses(logging.Filter):
    """Drops Kopf's "Timer '...' succeeded." lines (the ModelDeployments' timers): one per
    object per tick, and nothing the status does not say. Failures still log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        return not (
            record.levelno == logging.INFO
            and message.startswith("Timer ")
            and message.endswith(" succeeded.")
        )


# The kinds Kopf watches in each watched namespace (FineTuneJobs, ModelDeployments, RayJobs,
# pods, Deployments and Kueue's Workloads), and cluster-wide (nodes, namespaces, policies).
NAMESPACED_WATCHES = 6
CLUSTER_WATCHES = 3
# Kopf's own streams: its scanning of CRDs and of namespaces, and peering.
KOPF_WATCHES = 3
# Kopf's patches in flight beside the watches (the handlers' own requests use the operator's
# client, not Kopf's session).
PATCH_CONNECTIONS = 16


def connection_limit(namespaces: int) -> int:
    """How many connections Kopf may hold to the API server at once.

    Kopf's own session has no limit: under a burst of events it opens a connection per
    concurrent patch (about a hundred), and each TLS connection keeps its buffers for the life
    of the process. Every watch stream holds a connection for as long as it runs, so the limit
    leaves room for all of them, then PATCH_CONNECTIONS more for Kopf's patches. (A limit below
    the number of streams would leave a watch waiting for a connection for ever.)
    """
    watches = NAMESPACED_WATCHES * max(1, namespaces) + CLUSTER_WATCHES + KOPF_WATCHES
    return watches + PATCH_CONNECTIONS


# Read size of asyncio's TLS transport: each connection keeps a buffer this large (CPython's
# 256 KiB; see smaller_tls_read_buffers).
TLS_READ_BUFFER = 64 * 1024


def smaller_tls_read_buffers() -> None:
    """Give each of Kopf's TLS connections a 64 KiB read buffer instead of asyncio's 256 KiB.

    asyncio allocates the buffer, zero-filled and so resident, when a connection opens, and
    keeps it as long as the connection lives: with Kopf's pool full under a burst (34
    connections when three namespaces are watched) that was 8.5 MiB of zeros
    (bench/operator_scale.py with tracemalloc, docs/benchmarks.md). A watch event is a few KB
    and a list page of 100 objects some hundreds: a smaller buffer costs a few more reads.
    CPython has no setting for it; the class attribute is what every connection reads.
    """
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


def login_with_bounded_pool(
    namespaces: int, settings: kopf.OperatorSettings, logger: kopf.Logger
) -> kopf.AiohttpSession:
    """Kopf's login with the kubernetes client library (``kopf.login_via_client``: a pod's
    service account, else the kubeconfig), on a connection pool of bounded size. Kopf logs in
    again when the server answers 401, so a rotated token is read afresh. Called from Kopf's
    event loop, which the aiohttp session binds to."""
    info = kopf.login_via_client(logger=logger, settings=settings)
    if info is None:
        raise kopf.LoginError("the kubernetes client library is not installed")
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=connection_limit(namespaces), ssl=info.as_ssl_context()
        ),
        headers={**info.as_http_headers(), "User-Agent": USER_AGENT},
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
        aiohttp_session=session,
    )


def slim_watched_objects(spec_fields: Mapping[tuple[str, str], Iterable[str]]) -> None:
    """Drop what nobody reads from every object Kopf lists or watches, as it arrives:
    ``metadata.managedFields`` of every kind, and of the kinds the operator only indexes,
    every part of the spec but ``spec_fields[(group, plural)]``
    (handlers/indexes.INDEXED_SPEC_FIELDS).

    Kopf queues each watch event, whole, for its object's worker, and under a burst (thousands
    of jobs created at once, bench/operator_scale.py) thousands wait at a time. managedFields
    mirrors every field each writer set, so it is as large as the rest of a RayJob, and neither
    Kopf nor the operator reads it (``kubectl get --show-managed-fields`` still shows who owns
    what); a RayJob's three pod templates are read by KubeRay, not by the operator's index.
    Kopf has no setting for this; its watcher calls ``watching.infinite_watch`` through the
    module, so it is wrapped there (tests/unit/test_kopf_tuning.py fails if a Kopf upgrade
    moves it).
    """
    original = _kopf_watching.infinite_watch
    if original in _SLIMMING_WATCHES:
        return  # installed already (a second operator run in the same process)
    kept = {kind: frozenset(fields) for kind, fields in spec_fields.items()}

    async def infinite_watch(**kwargs: Any) -> AsyncIterator[Any]:
        resource = kwargs.get("resource")
        kind = (str(getattr(resource, "group", "")), str(getattr(resource, "plural", "")))
        spec_kept = kept.get(kind)
        event: Any
        async for event in original(**kwargs):
            obj = event.get("object") if isinstance(event, dict) else None
            if isinstance(obj, dict):
                slim(obj, spec_kept)
            yield event

    _SLIMMING_WATCHES.add(infinite_watch)
    _kopf_watching.infinite_watch = infinite_watch


# The wrappers slim_watched_objects installed, so that it never wraps one of its own.
_SLIMMING_WATCHES: set[Callable[..., AsyncIterator[Any]]] = set()


def slim(obj: dict[str, Any], spec_kept: Collection[str] | None) -> None:
    """Drop ``obj``'s managedFields, and every key of its spec not in ``spec_kept`` (None:
    the whole spec stays), in place."""
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
    spec = obj.get("spec")
    if spec_kept is not None and isinstance(spec, dict):
        obj["spec"] = {key: value for key, value in spec.items() if key in spec_kept}
