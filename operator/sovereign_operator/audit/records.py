"""Audit records: their canonical bytes, their digests and the chain that links them.

A record is one fact about one object (a FineTuneJob, a ModelDeployment). It holds the
digest of the record before it, so that changing, removing, reordering or inserting any
record breaks every link after it. The digest is taken over the stored bytes, which are
canonical JSON: the same record always has the same bytes, whoever writes it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SCHEMA = "sovereign-ai.eu/audit/v1"
GENESIS = "sha256:" + "0" * 64
DIGEST_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
HEAD_PATTERN = re.compile(r"^(?P<seq>[0-9]{1,12}):(?P<digest>sha256:[0-9a-f]{64})$")
# Positions are zero-padded so that the store lists records in chain order.
POSITION_DIGITS = 12
RECORDS_FOLDER = "records/"


class RecordError(ValueError):
    """Bytes that are not a well-formed audit record."""


@dataclass(frozen=True)
class Subject:
    """The object a record is about."""

    kind: str
    namespace: str
    name: str
    uid: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name, "uid": self.uid}

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Fact:
    """One thing decided or observed, before it has a place in the chain. ``key`` tells facts
    apart within their subject: a fact whose key is already recorded is not recorded again, so
    that a pass may derive all its facts every time (level-based) and a restart records nothing
    twice."""

    subject: Subject
    event: str
    key: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Head:
    """A position in the chain and the digest of the record there: ``17:sha256:...``."""

    seq: int
    digest: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.digest}"


def parse_head(text: str) -> Head:
    match = HEAD_PATTERN.match(text.strip())
    if match is None:
        raise RecordError(f"{text!r} is not an audit head (SEQ:sha256:HEX)")
    return Head(int(match["seq"]), match["digest"])


@dataclass(frozen=True)
class Record:
    seq: int
    prev: str
    time: str
    writer: str
    subject: Subject
    event: str
    key: str
    details: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "seq": self.seq,
            "prev": self.prev,
            "time": self.time,
            "writer": self.writer,
            "subject": self.subject.as_dict(),
            "event": self.event,
            "key": self.key,
            "details": dict(self.details),
        }


def encode(record: Record) -> bytes:
    """Canonical JSON: sorted keys, no spaces, ASCII only."""
    return json.dumps(record.as_dict(), sort_keys=True, separators=(",", ":")).encode("ascii")


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def decode(data: bytes) -> Record:
    """The record these bytes hold; RecordError when they are not one, or are not in their
    canonical form (a record re-serialised by hand no longer has the digest it was chained by)."""
    try:
        raw = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordError(f"not canonical JSON: {error}") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise RecordError(f"not a {SCHEMA} record")
    try:
        subject = raw["subject"]
        record = Record(
            seq=int(raw["seq"]),
            prev=str(raw["prev"]),
            time=str(raw["time"]),
            writer=str(raw["writer"]),
            subject=Subject(
                str(subject["kind"]),
                str(subject["namespace"]),
                str(subject["name"]),
                str(subject["uid"]),
            ),
            event=str(raw["event"]),
            key=str(raw["key"]),
            details=dict(raw["details"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise RecordError(f"missing or malformed field: {error}") from None
    if encode(record) != data:
        raise RecordError("not in canonical form (fields added, reordered or re-spaced)")
    if not DIGEST_PATTERN.match(record.prev):
        raise RecordError(f"prev {record.prev!r} is not a sha256 digest")
    return record


def record_key(prefix: str, seq: int) -> str:
    """The object key of position ``seq`` (1-based) under ``prefix``."""
    return f"{prefix}{RECORDS_FOLDER}{seq:0{POSITION_DIGITS}d}.json"


def position_of(prefix: str, key: str) -> int | None:
    """The position a record key names; None for any other key."""
    name = key.removeprefix(prefix + RECORDS_FOLDER)
    if name == key or not re.fullmatch(rf"[0-9]{{{POSITION_DIGITS}}}\.json", name):
        return None
    return int(name[:POSITION_DIGITS])
