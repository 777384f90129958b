"""The story ``sovai audit show`` tells about one object, in a compliance officer's words.

Kept pure (a checked Chain in, lines out) so that what an auditor reads can be tested to the
character without a bucket, and so that the command line stays only wiring.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .claims import FINETUNEJOB, MODELDEPLOYMENT
from .log import Location
from .records import Record
from .verify import Chain


@dataclass(frozen=True)
class Story:
    """The records about one object (one uid), and those of the deployments that served it."""

    kind: str
    namespace: str
    name: str
    uid: str
    records: list[tuple[int, Record]]
    earlier_uids: list[str]
    servers: dict[str, list[tuple[int, Record]]]


def render_story(
    chain: Chain, kind: str, namespace: str, name: str, location: Location | str
) -> list[str] | None:
    """The lines of ``show``; None when the log holds no record about that object."""
    story = find_story(chain, kind, namespace, name)
    if story is None:
        return None
    lines = [f"{kind} {namespace}/{name} (uid {story.uid})"]
    lines += _verdict(chain, location)
    if story.earlier_uids:
        lines.append(
            f"{len(story.earlier_uids)} earlier {kind}(s) of this name were deleted and "
            f"re-created (uid {', '.join(story.earlier_uids)}); this is the latest"
        )
    lines += ["", "Summary"]
    summary = _job_summary(story) if kind == FINETUNEJOB else _deployment_summary(story, chain)
    lines += [f"  {label:<16}{value}" for label, value in summary]
    lines += ["", "Records"]
    flagged = {finding.position for finding in chain.findings}
    mine = [(seq, rec, "") for seq, rec in story.records]
    theirs = [(seq, rec, str(rec.subject)) for recs in story.servers.values() for seq, rec in recs]
    for seq, record, other in sorted(mine + theirs, key=lambda item: item[0]):
        mark = "!" if seq in flagged else " "
        about = f"[{other}] " if other else ""
        lines.append(
            f"{mark}{seq:>6}  {record.time[:19]}Z  {record.event:<17}{about}"
            f"{essentials(record.event, record.details)}".rstrip()
        )
    return lines


def _verdict(chain: Chain, location: Location | str) -> list[str]:
    if chain.ok:
        return [f"audit log {location}: {len(chain.records)} records, chain intact"]
    lines = [
        f"WARNING: the audit log {location} has {len(chain.findings)} finding(s); what follows "
        "may be incomplete or altered (records marked ! are named below):"
    ]
    return lines + [f"  {finding}" for finding in chain.findings]


def find_story(chain: Chain, kind: str, namespace: str, name: str) -> Story | None:
    """The latest object of that name (the uid whose first record is the latest)."""
    by_uid: dict[str, list[tuple[int, Record]]] = {}
    for seq, (record, _) in sorted(chain.records.items()):
        subject = record.subject
        if (subject.kind, subject.namespace, subject.name) == (kind, namespace, name):
            by_uid.setdefault(subject.uid, []).append((seq, record))
    if not by_uid:
        return None
    order = sorted(by_uid, key=lambda uid: by_uid[uid][0][0])
    uid = order[-1]
    servers = _servers(chain, by_uid[uid], f"{namespace}/{name}") if kind == FINETUNEJOB else {}
    return Story(kind, namespace, name, uid, by_uid[uid], order[:-1], servers)


def _servers(
    chain: Chain, job_records: list[tuple[int, Record]], job: str
) -> dict[str, list[tuple[int, Record]]]:
    """The records of each ModelDeployment that named this job as its source, or served the
    model it registered."""
    uris = {
        str(rec.details.get("modelUri"))
        for _, rec in job_records
        if rec.event == "ModelRegistered" and rec.details.get("modelUri")
    }
    serving = {
        rec.subject.uid
        for rec, _ in chain.records.values()
        if rec.subject.kind == MODELDEPLOYMENT
        and (rec.details.get("sourceJob") == job or str(rec.details.get("modelUri")) in uris)
    }
    return {uid: chain.about(uid) for uid in sorted(serving)}


# -- summaries: the latest of each kind of fact, in the officer's words -------------------------


def _last(records: Sequence[tuple[int, Record]], *events: str) -> Record | None:
    found = [rec for _, rec in records if rec.event in events]
    return found[-1] if found else None


def _all(records: Sequence[tuple[int, Record]], *events: str) -> list[Record]:
    return [rec for _, rec in records if rec.event in events]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "(not recorded)"
    if isinstance(value, float):
        return f"{value:.6g}"  # for reading: the record itself keeps every digit
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _join(*parts: Any) -> str:
    """The parts that are set, as text, with one space between."""
    return " ".join(_text(part) for part in parts if part not in (None, "", [], {}))


def _policy_lines(records: Sequence[tuple[int, Record]]) -> list[tuple[str, str]]:
    policies = _all(records, "PolicyBound", "PolicyChanged")
    if not policies:
        return [("policy", "not recorded")]
    last = policies[-1].details
    lines = [
        ("policy", _join(last.get("policy"), last.get("policyDigest"))),
        ("regions", ", ".join(_text(r) for r in last.get("regions") or []) or "none recorded"),
    ]
    changes = len(_all(records, "PolicyChanged"))
    if changes:
        lines.append(("", f"(its content changed {changes} time(s) while the object lived)"))
    return lines


def _pod_lines(records: Sequence[tuple[int, Record]]) -> list[tuple[str, str]]:
    pods = [essentials(rec.event, rec.details) for rec in _all(records, "PodPlaced")]
    return [("pods" if i == 0 else "", pod) for i, pod in enumerate(pods or ["none recorded"])]


def _decisions(records: Sequence[tuple[int, Record]]) -> list[tuple[str, str]]:
    lines = []
    admitted = _last(records, "Admitted")
    if admitted is not None:
        lines.append(("admitted", f"generation {_text(admitted.details.get('generation'))}"))
    lines += [("refused", essentials(rec.event, rec.details)) for rec in _all(records, "Refused")]
    return lines


def _ending(records: Sequence[tuple[int, Record]]) -> list[tuple[str, str]]:
    lines = []
    phase = _last(records, "PhaseChanged")
    if phase is not None:
        lines.append(("phase", essentials(phase.event, phase.details)))
    deleted = _last(records, "Deleted")
    if deleted is not None:
        lines.append(("deleted", f"{deleted.time[:19]}Z {essentials('Deleted', deleted.details)}"))
    return lines


def _job_summary(story: Story) -> list[tuple[str, str]]:
    records = story.records
    lines = _policy_lines(records) + _decisions(records)
    verified = _last(records, "InputsVerified")
    admitted = _last(records, "Admitted")
    source = verified or admitted
    checked = "" if verified is not None else " (declared; no digest recorded yet)"
    datasets = (source.details.get("datasets") if source else None) or {}
    for use in ("training", "validation"):
        if use in datasets:
            lines.append((f"{use} data", _dataset(datasets[use]) + checked))
    base = (source.details.get("baseModel") if source else None) or {}
    if base:
        lines.append(("base model", _model(base) + checked))
    lines += _pod_lines(records)
    model = _last(records, "ModelRegistered")
    if model is not None:
        lines.append(("model", essentials(model.event, model.details)))
    compute = _last(records, "ComputeAccounted")
    if compute is not None:
        lines.append(("compute", essentials(compute.event, compute.details)))
    lines += _ending(records)
    digest = model.details.get("modelDigest") if model is not None else None
    served = [_served_line(recs, digest) for recs in story.servers.values()]
    lines += [("served by" if i == 0 else "", line) for i, line in enumerate(served)]
    if not served:
        lines.append(("served by", "no ModelDeployment recorded"))
    return lines


def _served_line(records: list[tuple[int, Record]], registered: Any) -> str:
    subject = records[0][1].subject
    served = _last(records, "Served")
    if served is None:
        state = "admitted, not recorded serving"
    else:
        state = f"served from {served.time[:19]}Z: {essentials('Served', served.details)}"
        state += _digest_check(served.details.get("modelDigest"), registered)
    ended = _last(records, "Stopped", "Deleted")
    if ended is not None:
        state += f"; {ended.event.lower()} {ended.time[:19]}Z"
    return f"{subject.namespace}/{subject.name}: {state}"


def _digest_check(served: Any, registered: Any) -> str:
    if not served or not registered:
        return ""
    if served == registered:
        return " (the digest the job registered)"
    return f" (NOT the digest the job registered, {registered})"


def _deployment_summary(story: Story, chain: Chain) -> list[tuple[str, str]]:
    records = story.records
    lines = _policy_lines(records) + _decisions(records)
    admitted = _last(records, "Admitted")
    source_job = admitted.details.get("sourceJob") if admitted is not None else None
    if admitted is not None:
        lines.append(("model", _join(admitted.details.get("modelUri"))))
    registered = _registered_digest(chain, source_job) if isinstance(source_job, str) else None
    if source_job:
        lines.append(
            (
                "trained by",
                f"FineTuneJob {_text(source_job)}"
                + (f", which registered {registered}" if registered else ""),
            )
        )
    lines += _pod_lines(records)
    served = _last(records, "Served")
    if served is not None:
        check = _digest_check(served.details.get("modelDigest"), registered)
        lines.append(("served", f"{essentials('Served', served.details)}{check}"))
    scaled = _last(records, "Scaled")
    if scaled is not None:
        lines.append(("replicas", essentials("Scaled", scaled.details)))
    lines += [("stopped", essentials(rec.event, rec.details)) for rec in _all(records, "Stopped")]
    return lines + _ending(records)


def _registered_digest(chain: Chain, job: str) -> str | None:
    """The digest the latest job of that name registered, as the log says."""
    namespace, _, name = job.partition("/")
    story = find_story(chain, FINETUNEJOB, namespace, name)
    model = _last(story.records, "ModelRegistered") if story is not None else None
    digest = model.details.get("modelDigest") if model is not None else None
    return str(digest) if digest else None


# -- one record's essentials --------------------------------------------------------------------


def _dataset(value: Any) -> str:
    if isinstance(value, Mapping):
        return _join(value.get("uri"), value.get("sha256"))
    return _text(value)


def _model(value: Any) -> str:
    if isinstance(value, Mapping):
        revision = value.get("revision")
        return _text(value.get("uri")) + (f" @ {_text(revision)}" if revision else "")
    return _text(value)


def _pairs(details: Mapping[str, Any]) -> str:
    return ", ".join(f"{key} {_text(value)}" for key, value in sorted(details.items()))


def _admitted(d: Mapping[str, Any]) -> str:
    if "modelUri" in d:  # a ModelDeployment
        parts = [f"model {_text(d['modelUri'])}"]
        parts += [f"from FineTuneJob {_text(d['sourceJob'])}"] if d.get("sourceJob") else []
        parts += [_text(d["modelDigest"])] if d.get("modelDigest") else []
    else:
        datasets = d.get("datasets") or {}
        parts = [f"base model {_model(d.get('baseModel'))}"]
        parts += [f"{use} {_dataset(uri)}" for use, uri in sorted(datasets.items())]
        parts += [f"output {_text(d['output'])}"] if d.get("output") else []
    return f"generation {_text(d.get('generation'))}: " + ", ".join(parts)


def _inputs(d: Mapping[str, Any]) -> str:
    datasets = d.get("datasets") or {}
    parts = [f"{use} {_dataset(value)}" for use, value in sorted(datasets.items())]
    if d.get("baseModel"):
        parts.append(f"base model {_model(d['baseModel'])}")
    return ", ".join(parts)


def _served(d: Mapping[str, Any]) -> str:
    where = f" at {_text(d['url'])}" if d.get("url") else ""
    replicas = f", {_text(d['replicas'])} replica(s)" if d.get("replicas") is not None else ""
    return _join(d.get("modelUri"), d.get("modelDigest")) + replicas + where


def _policy(d: Mapping[str, Any]) -> str:
    regions = ", ".join(_text(r) for r in d.get("regions") or [])
    was = f" (was {_text(d['previousDigest'])})" if d.get("previousDigest") else ""
    return f"{_join(d.get('policy'), d.get('policyDigest'))}{was}, regions {regions or 'none'}"


def _phase(d: Mapping[str, Any]) -> str:
    reason = f" ({_text(d['reason'])})" if d.get("reason") else ""
    message = f": {_text(d['message'])}" if d.get("message") else ""
    return f"{_text(d.get('phase'))}{reason}{message}"


ESSENTIALS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "PolicyBound": _policy,
    "PolicyChanged": _policy,
    "Admitted": _admitted,
    "Refused": lambda d: (
        f"generation {_text(d.get('generation'))}: {_text(d.get('reason'))}: "
        f"{_text(d.get('message'))}"
    ),
    "ChildCreated": lambda d: f"{_join(d.get('kind'), d.get('name'))} (uid {_text(d.get('uid'))})",
    "PodPlaced": lambda d: (
        f"{_text(d.get('pod'))} on node {_text(d.get('node'))} in region {_text(d.get('region'))}"
    ),
    "InputsVerified": _inputs,
    "ModelRegistered": lambda d: (
        _join(d.get("modelUri"), d.get("modelDigest"))
        + (f", MLflow run {_text(d['runId'])}" if d.get("runId") else "")
        + (f", stored at {_text(d['outputUri'])}" if d.get("outputUri") else "")
    ),
    "ComputeAccounted": _pairs,
    "PhaseChanged": _phase,
    "Deleted": lambda d: f"in phase {_text(d['phase'])}" if d.get("phase") else "",
    "Served": _served,
    "Scaled": lambda d: f"{_text(d.get('replicas'))} replica(s)",
    "Stopped": lambda d: _text(d.get("reason")),
}


def essentials(event: str, details: Mapping[str, Any]) -> str:
    """One record's details in one line; every detail, as ``key value``, for an event this
    version does not know."""
    render = ESSENTIALS.get(event, _pairs)
    try:
        return render(details)
    except (AttributeError, KeyError, TypeError):  # details of another shape than expected
        return _pairs(details)
