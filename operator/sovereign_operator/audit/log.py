"""Appending to the audit log in an S3-compatible bucket.

Each record is one object, ``<prefix>records/<position>.json``, written with
``If-None-Match: *``: the store creates it only if that position is free. Two writers (two
replicas during a leader change, or an operator and its restarted self) therefore cannot both
take a position; the one refused reads what the other wrote and appends after it. The chain
never forks, whoever holds the lease. A writer killed mid-request leaves either the whole
record or none, as the store creates an object atomically.

Where the bucket has Object Lock, each record is kept, unchanged, for the bucket's retention
(the store refuses to delete or overwrite a locked version); the hash chain is what tells a
changed record from the original either way.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .records import (
    GENESIS,
    Fact,
    Head,
    Record,
    RecordError,
    decode,
    digest,
    encode,
    position_of,
    record_key,
)

log = logging.getLogger(__name__)

# A busy second writer could in theory keep taking the next position; past this many refusals
# in one append something else is wrong (a store that refuses every conditional write).
MAX_CONFLICTS = 50
TAKEN = ("PreconditionFailed", "ConditionalRequestConflict")


class AuditUnavailable(RuntimeError):
    """The audit log cannot be read or appended to now."""


@dataclass(frozen=True)
class Location:
    """Where the log is: ``s3://bucket/prefix/`` at an endpoint."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> Location:
        if not uri.startswith("s3://") or not uri.removeprefix("s3://").split("/", 1)[0]:
            raise ValueError(f"{uri!r} is not an s3://bucket/prefix URI")
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        prefix = prefix.strip("/")
        return cls(bucket, f"{prefix}/" if prefix else "")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def s3_client(endpoint: str | None, region: str | None) -> Any:
    """boto3's client, path-style; credentials from boto3's own chain (AWS_* variables)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or "")


def default_writer() -> str:
    """Who appends: the pod (its host name) and process."""
    return f"{socket.gethostname()}/{os.getpid()}"


class AuditLog:
    """The chain as this writer knows it, and appending to it. Thread-safe: the operator's
    handlers run in a pool."""

    def __init__(self, client: Any, location: Location, writer: str | None = None) -> None:
        self.client = client
        self.location = location
        self.writer = writer or default_writer()
        self.head = Head(0, GENESIS)
        self._recorded: dict[str, set[str]] = {}
        self._subject_heads: dict[str, Head] = {}
        self._firsts: dict[tuple[str, str], Head] = {}
        self._lock = threading.Lock()
        self._loaded = False
        # Breaks seen while reading the chain (positions): the log goes on after them, and
        # `sovai audit verify` tells the whole story.
        self.breaks: list[int] = []

    def retention(self) -> str | None:
        """The bucket's default Object Lock retention, e.g. ``COMPLIANCE 365 days``; None
        when the bucket has none."""
        try:
            config = self.client.get_object_lock_configuration(Bucket=self.location.bucket)
        except Exception as error:
            if "ObjectLockConfigurationNotFound" in error_code(error) or error_code(error) in (
                "NotImplemented",
                "NoSuchObjectLockConfiguration",
            ):
                return None
            raise AuditUnavailable(f"{self.location}: {error}") from error
        rule = (config.get("ObjectLockConfiguration") or {}).get("Rule") or {}
        retention = rule.get("DefaultRetention") or {}
        if not retention:
            return None
        span = (
            f"{retention['Days']} days"
            if "Days" in retention
            else f"{retention.get('Years')} years"
        )
        return f"{retention.get('Mode')} {span}"

    def subject_head(self, uid: str) -> Head | None:
        """The last record about the object with this uid."""
        with self._lock:
            self._ensure_loaded()
            return self._subject_heads.get(uid)

    def recorded(self, uid: str, key: str) -> Head | None:
        """Whether a fact with this key about that object is in the chain (its head if so)."""
        with self._lock:
            self._ensure_loaded()
            return self._subject_heads.get(uid) if key in self._recorded.get(uid, ()) else None

    def first(self, uid: str, event: str) -> Head | None:
        """The first record of that event about the object with this uid."""
        with self._lock:
            self._ensure_loaded()
            return self._firsts.get((uid, event))

    def append(self, facts: Iterable[Fact], now: datetime | None = None) -> dict[str, Head]:
        """Record each fact not yet recorded, in order; returns the head of each subject that
        has any record. AuditUnavailable when the store cannot be read or written."""
        with self._lock:
            self._ensure_loaded()
            for fact in facts:
                self._append_one(fact, now)
            return dict(self._subject_heads)

    def load(self) -> None:
        """Read the chain from the start (at start-up; later appends only read what others
        added)."""
        with self._lock:
            self._ensure_loaded()

    # -- below: the lock is held ------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        positions = self._listed_positions()
        for seq in positions:
            data = self._read(seq)
            if data is not None:
                self._ingest(seq, data)
        self._loaded = True
        log.info("audit log %s: %d records, head %s", self.location, self.head.seq, self.head)

    def _listed_positions(self) -> list[int]:
        positions = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            pages = paginator.paginate(
                Bucket=self.location.bucket, Prefix=self.location.prefix + "records/"
            )
            for page in pages:
                for item in page.get("Contents", []):
                    seq = position_of(self.location.prefix, item["Key"])
                    if seq is not None:
                        positions.append(seq)
        except Exception as error:
            raise AuditUnavailable(f"cannot list {self.location}: {error}") from error
        return sorted(positions)

    def _read(self, seq: int) -> bytes | None:
        key = record_key(self.location.prefix, seq)
        try:
            answer = self.client.get_object(Bucket=self.location.bucket, Key=key)
            data: bytes = answer["Body"].read()
            return data
        except Exception as error:
            if error_code(error) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise AuditUnavailable(f"cannot read {key}: {error}") from error

    def _ingest(self, seq: int, data: bytes) -> None:
        """Take the record at ``seq`` as the new head (a break is noted, not repaired)."""
        try:
            record = decode(data)
        except RecordError as error:
            log.error("audit record %d is unreadable (%s): run `sovai audit verify`", seq, error)
            self.breaks.append(seq)
        else:
            if record.seq != seq or record.prev != self.head.digest or seq != self.head.seq + 1:
                log.error("audit chain broken at record %d: run `sovai audit verify`", seq)
                self.breaks.append(seq)
            uid = record.subject.uid
            self._recorded.setdefault(uid, set()).add(record.key)
            self._subject_heads[uid] = Head(seq, digest(data))
            self._firsts.setdefault((uid, record.event), Head(seq, digest(data)))
        self.head = Head(seq, digest(data))

    def _catch_up(self) -> None:
        """Read what other writers appended after our head."""
        while (data := self._read(self.head.seq + 1)) is not None:
            self._ingest(self.head.seq + 1, data)

    def _append_one(self, fact: Fact, now: datetime | None) -> None:
        uid = fact.subject.uid
        for _ in range(MAX_CONFLICTS):
            if fact.key in self._recorded.get(uid, ()):
                return
            seq = self.head.seq + 1
            record = Record(
                seq=seq,
                prev=self.head.digest,
                time=(now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                writer=self.writer,
                subject=fact.subject,
                event=fact.event,
                key=fact.key,
                details=fact.details,
            )
            data = encode(record)
            try:
                self.client.put_object(
                    Bucket=self.location.bucket,
                    Key=record_key(self.location.prefix, seq),
                    Body=data,
                    ContentType="application/json",
                    IfNoneMatch="*",
                )
            except Exception as error:
                if error_code(error) not in TAKEN:
                    raise AuditUnavailable(f"cannot append to {self.location}: {error}") from error
                # Taken: by another writer, or by this very request when its first answer was
                # lost and the client sent it again. Either way the record there is read back.
                self._catch_up()
                continue
            self._ingest(seq, data)
            return
        raise AuditUnavailable(
            f"{self.location}: position {self.head.seq + 1} refused {MAX_CONFLICTS} times"
        )
