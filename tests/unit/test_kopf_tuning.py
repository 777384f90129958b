"""The Kopf adjustments give Kopf's results with less work (pure logic, no cluster)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, cast

import kopf
import pytest
from kopf._cogs.clients import watching  # the module whose stream Kopf's watcher reads
from kopf._cogs.structs import diffs  # what Kopf compares the stored and built essences with

from sovereign_operator.kopf_tuning import (
    DigestDiffBase,
    ProgressAnnotations,
    QuietTimerSuccesses,
    StatusDiffBase,
    slim_watched_objects,
)

FIELD = "status.lastHandledConfiguration"


def body(**extra: Any) -> kopf.Body:
    raw: dict[str, Any] = {
        "apiVersion": "sovereign-ai.eu/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {
            "name": "ft",
            "namespace": "team-a",
            "uid": "u-1",
            "resourceVersion": "42",
            "labels": {"team": "a"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "team.example/owner": "jane",
                "other-operator.example/kopf-managed": "yes",
                "other-operator.example/last-handled-configuration": "{}",
            },
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            "finalizers": ["sovereign-ai.eu/finalizer"],
        },
        "spec": {"baseModel": {"uri": "hf://acme/m"}, "resources": {"workers": 2}},
        "status": {"phase": "Queued", "lastHandledConfiguration": "{}"},
    }
    raw.update(extra)
    return kopf.Body(cast(kopf.RawBody, raw))


@pytest.mark.parametrize(
    "obj",
    [
        body(),
        body(metadata={"name": "bare"}),
        body(spec={}, status={}),
        body(extra={"top": [1, {"a": None}]}),
    ],
    ids=["full", "no-labels-or-annotations", "empty-spec", "other-top-level-field"],
)
def test_diffbase_essence_equals_kopfs(obj: kopf.Body) -> None:
    ours = StatusDiffBase(field=FIELD).build(body=obj)
    kopfs = kopf.StatusDiffBaseStorage(field=FIELD).build(body=obj)
    assert ours == kopfs
    assert "status" not in ours


def test_diffbase_essence_is_a_copy() -> None:
    obj = body()
    essence = cast(dict[str, Any], StatusDiffBase(field=FIELD).build(body=obj))
    essence["spec"]["resources"]["workers"] = 9
    assert obj["spec"]["resources"]["workers"] == 2


@pytest.mark.parametrize(
    "fields",
    [[("spec",)], ["spec.resources"], [("status", "phase")], [("metadata", "labels")], []],
    ids=["spec", "spec-as-text", "status", "metadata", "none"],
)
def test_diffbase_with_watched_fields_equals_kopfs(fields: list[Any]) -> None:
    obj = body()
    ours = StatusDiffBase(field=FIELD).build(body=obj, extra_fields=fields)
    kopfs = kopf.StatusDiffBaseStorage(field=FIELD).build(body=obj, extra_fields=fields)
    assert ours == kopfs


def test_diffbase_with_a_watched_status_field_keeps_it() -> None:
    ours = StatusDiffBase(field=FIELD).build(body=body(), extra_fields=[("status", "phase")])
    assert cast(dict[str, Any], ours)["status"] == {"phase": "Queued"}


def digest_storage() -> DigestDiffBase:
    return DigestDiffBase(field=FIELD, progress=ProgressAnnotations(prefix="sovereign-ai.eu"))


def handled(storage: DigestDiffBase, obj: kopf.Body) -> kopf.Body:
    """The object as it is after Kopf handled it: the built essence stored in its status."""
    patch = kopf.Patch()
    storage.store(body=obj, patch=patch, essence=storage.build(body=obj, extra_fields=[("spec",)]))
    raw = cast(dict[str, Any], dict(obj))
    raw["status"] = {**raw["status"], **patch["status"]}
    return kopf.Body(cast(kopf.RawBody, raw))


def kopf_diff(storage: DigestDiffBase, obj: kopf.Body) -> kopf.Diff:
    """The diff Kopf computes on a watch event (kopf/_core/reactor/processing.py)."""
    old = storage.fetch(body=obj)
    assert old is not None
    new = storage.build(body=obj, extra_fields=[("spec",)])
    clear = storage._progress.clear
    return diffs.diff(clear(essence=old), clear(essence=new))


def changed(obj: kopf.Body, path: tuple[str, ...], value: Any) -> kopf.Body:
    raw = cast(dict[str, Any], json.loads(json.dumps(dict(obj))))
    target = raw
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    return kopf.Body(cast(kopf.RawBody, raw))


def test_digest_diffbase_is_two_short_digests_not_the_spec() -> None:
    stored = handled(digest_storage(), body())["status"]["lastHandledConfiguration"]
    assert stored.startswith("sha256:")
    assert len(stored) == len("sha256:") + 16 + 1 + 16
    assert "baseModel" not in stored


@pytest.mark.parametrize(
    ("path", "value", "spec_changed", "anything_changed"),
    [
        (("status", "phase"), "Running", False, False),
        (("metadata", "resourceVersion"), "43", False, False),
        (
            ("metadata", "annotations", "sovereign-ai.eu/ftj-reconcile"),
            '{"retries":1}',
            False,
            False,
        ),
        (("metadata", "labels", "team"), "b", False, True),
        (("metadata", "annotations", "team.example/owner"), "joe", False, True),
        (("spec", "resources", "workers"), 3, True, True),
        (("spec", "suspend"), True, True, True),
    ],
    ids=["status", "resource-version", "kopf-progress", "label", "annotation", "spec", "new-field"],
)
def test_digest_diffbase_gives_kopf_the_causes_its_json_gave(
    path: tuple[str, ...], value: Any, spec_changed: bool, anything_changed: bool
) -> None:
    storage = digest_storage()
    after = changed(handled(storage, body()), path, value)
    diff = kopf_diff(storage, after)
    assert bool(diff) is anything_changed
    # Handlers registered with field="spec" (the operator's update handlers) see only this.
    assert bool(diffs.reduce(diff, ("spec",))) is spec_changed
    # The same change, judged by Kopf's own JSON storage:
    kopfs = kopf.StatusDiffBaseStorage(field=FIELD)
    patch = kopf.Patch()
    kopfs.store(body=body(), patch=patch, essence=kopfs.build(body=body()))
    legacy = changed(changed(body(), path, value), ("status", "lastHandledConfiguration"),
                     patch["status"]["lastHandledConfiguration"])  # fmt: skip
    legacy_diff = kopf_diff(storage, legacy)
    assert bool(diffs.reduce(legacy_diff, ("spec",))) is spec_changed


def test_digest_diffbase_replayed_after_handling_has_no_diff() -> None:
    storage = digest_storage()
    assert not kopf_diff(storage, handled(storage, body()))


def test_digest_diffbase_nothing_stored_means_created() -> None:
    assert digest_storage().fetch(body=body(status={})) is None


def test_digest_diffbase_reads_kopfs_json_written_by_earlier_versions() -> None:
    essence = {"spec": {"a": 1}, "metadata": {"labels": {"x": "y"}}}
    obj = body(status={"lastHandledConfiguration": json.dumps(essence)})
    assert digest_storage().fetch(body=obj) == essence


def record(success: bool) -> Any:
    started = "2026-11-27T10:00:00+00:00"
    if success:
        return {"started": started, "stopped": started, "success": True, "retries": 1}
    return {"started": started, "retries": 1, "message": "try again", "delayed": started}


def test_a_handler_done_at_once_leaves_no_write() -> None:
    storage, obj, patch = ProgressAnnotations(prefix="sovereign-ai.eu"), body(), kopf.Patch()
    storage.store(key=kopf.HandlerId("ftj-reconcile"), record=record(True), body=obj, patch=patch)
    assert patch  # Kopf's store writes the record and the mark...
    storage.purge(key=kopf.HandlerId("ftj-reconcile"), body=obj, patch=patch)
    assert dict(patch) == {}  # ...and nothing is left once the record is purged


def test_a_retrying_handler_keeps_its_record_and_the_mark() -> None:
    storage, obj, patch = ProgressAnnotations(prefix="sovereign-ai.eu"), body(), kopf.Patch()
    storage.store(key=kopf.HandlerId("ftj-reconcile"), record=record(False), body=obj, patch=patch)
    annotations = patch["metadata"]["annotations"]
    assert annotations["sovereign-ai.eu/kopf-managed"] == "yes"
    assert any(key.endswith("ftj-reconcile") for key in annotations)


def test_purging_a_stored_record_removes_it_and_leaves_the_mark_alone() -> None:
    storage = ProgressAnnotations(prefix="sovereign-ai.eu")
    marked = body()
    marked_meta = cast(dict[str, Any], marked)["metadata"]
    marked_meta["annotations"]["sovereign-ai.eu/kopf-managed"] = "yes"
    marked_meta["annotations"]["sovereign-ai.eu/ftj-reconcile"] = '{"retries":1}'
    patch = kopf.Patch()
    storage.purge(key=kopf.HandlerId("ftj-reconcile"), body=marked, patch=patch)
    assert patch["metadata"]["annotations"] == {"sovereign-ai.eu/ftj-reconcile": None}


def log_record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


@pytest.mark.parametrize(
    ("level", "message", "kept"),
    [
        (logging.INFO, "Timer 'mdep-follow' succeeded.", False),
        (logging.INFO, "Handler 'ftj-reconcile' succeeded.", True),
        (logging.ERROR, "Timer 'mdep-follow' failed with an exception. Will retry.", True),
        (logging.WARNING, "Timer 'mdep-follow' succeeded.", True),
    ],
)
def test_only_successful_timer_ticks_are_quiet(level: int, message: str, kept: bool) -> None:
    assert QuietTimerSuccesses().filter(log_record(level, message)) is kept


def test_watched_objects_reach_kopfs_queues_slimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the attribute Kopf's watcher calls: managedFields go from every kind, and the
    spec of an index-only kind keeps only what its index reads."""

    async def stream(**_: Any) -> Any:
        rayjob = {
            "metadata": {"uid": "r", "managedFields": [{}]},
            "spec": {"suspend": True, "x": 1},
        }
        for event in ({"type": None, "object": dict(body())}, "LISTED", {"object": rayjob}):
            yield event

    # The very attribute Kopf's watcher calls: if a Kopf upgrade moves it, this fails.
    monkeypatch.setattr(watching, "infinite_watch", stream)
    slim_watched_objects({("ray.io", "rayjobs"): ("suspend",)})
    slim_watched_objects({})  # a second install does not wrap twice

    async def drain(group: str, plural: str) -> list[Any]:
        slimmed: Any = watching.infinite_watch  # the wrapper, around the fake stream
        resource = kopf.Resource(group, "v1", plural)
        return [event async for event in slimmed(resource=resource, namespace=None)]

    job, listed, _ = asyncio.run(drain("sovereign-ai.eu", "finetunejobs"))
    assert listed == "LISTED"  # Kopf's bookmarks pass through untouched
    assert "managedFields" not in job["object"]["metadata"]
    assert job["object"]["metadata"]["uid"] == "u-1"
    assert job["object"]["spec"] == {
        "baseModel": {"uri": "hf://acme/m"},
        "resources": {"workers": 2},
    }
    *_, rayjob = asyncio.run(drain("ray.io", "rayjobs"))
    assert rayjob["object"] == {"metadata": {"uid": "r"}, "spec": {"suspend": True}}
