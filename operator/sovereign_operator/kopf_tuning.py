"""Adjustments to Kopf's defaults that matter with thousands of objects.

Each one removes work or memory that buys nothing: a write per object that is never read, a
deep copy of every object on every watch event, a log line per object per timer tick, and
TLS connections without bound.
Measured by bench/operator_scale.py (docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any, cast

import aiohttp
import kopf

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


def connection_limit(namespaces: int) -> int:
    """How many connections Kopf may hold to the API server at once.

    Kopf's own session has no limit: under a burst of events it opens a connection per
    concurrent patch (about a hundred), and each TLS connection keeps about 256 KiB of
    buffers for the life of the process. Every watch stream holds a connection for as long as
    it runs, so the limit leaves room for all of them: four namespaced kinds per watched
    namespace (FineTuneJobs, ModelDeployments, RayJobs, pods), three cluster-wide ones (nodes,
    namespaces, policies), Kopf's resource and namespace scanning and peering; then 16 more for
    Kopf's patches in flight (the handlers' own requests use the operator's client).
    """
    return 4 * max(1, namespaces) + 3 + 3 + 16


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
