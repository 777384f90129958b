"""Checking an audit chain: every record in its place, each linked to the one before, and the
heads that job status and MLflow claim found in it.

``check_chain`` is pure: it takes what the store holds and names each break by its position,
telling apart a modified record, a missing one, one moved from another position and one
inserted between two others. Reading the store (with every object version, where the bucket
keeps them) is ``read_store``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .log import Location, error_code
from .records import GENESIS, Head, Record, RecordError, decode, digest, position_of


@dataclass(frozen=True)
class Stored:
    """What the store holds at one record position. ``data`` is the current version (None when
    the position is empty or its current version is a delete marker); ``history`` is every
    version, oldest first, where the bucket keeps versions."""

    position: int
    data: bytes | None
    history: tuple[bytes | None, ...] = ()


@dataclass(frozen=True)
class Finding:
    position: int | None
    problem: str

    def __str__(self) -> str:
        where = f"record {self.position}" if self.position is not None else "log"
        return f"{where}: {self.problem}"


@dataclass(frozen=True)
class Claim:
    """Someone's statement that a record about ``uid`` is at ``head``: a job's status, a model
    version's MLflow tag."""

    source: str
    uid: str
    head: Head


@dataclass
class Chain:
    """The outcome of a check: the readable records by position, and what is wrong."""

    records: dict[int, tuple[Record, str]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def head(self) -> Head:
        if not self.records:
            return Head(0, GENESIS)
        last = max(self.records)
        return Head(last, self.records[last][1])

    def about(self, uid: str) -> list[tuple[int, Record]]:
        return [
            (seq, rec) for seq, (rec, _) in sorted(self.records.items()) if rec.subject.uid == uid
        ]


def _history_findings(stored: Stored) -> list[Finding]:
    versions = [v for v in stored.history if v is not None]
    markers = len(stored.history) - len(versions)
    found = []
    if stored.data is None and versions:
        found.append(
            Finding(
                stored.position,
                "deleted (a delete marker hides it; the store still keeps the original)",
            )
        )
    elif len(set(versions)) > 1:
        original = digest(versions[0])
        found.append(
            Finding(
                stored.position,
                f"rewritten: the store keeps {len(versions)} versions; the original is {original}",
            )
        )
    elif markers and stored.data is not None:
        found.append(Finding(stored.position, "was deleted, then written again"))
    return found


def check_chain(stored: Sequence[Stored], stray_keys: Iterable[str] = ()) -> Chain:
    """Name, by position, each record that is not what the writers left there. Findings come
    in position order, those about the whole log first."""
    chain = Chain()
    for key in stray_keys:
        chain.findings.append(Finding(None, f"{key} is not a record position (inserted by hand?)"))
    by_position = {s.position: s for s in stored}
    last = max(by_position, default=0)
    decoded: dict[int, tuple[Record, str]] = {}
    for position in range(1, last + 1):
        entry = by_position.get(position)
        if entry is not None:
            chain.findings.extend(_history_findings(entry))
        if entry is None or entry.data is None:
            if entry is None or not entry.history:
                chain.findings.append(Finding(position, "missing (deleted, or never written)"))
            continue
        try:
            record = decode(entry.data)
        except RecordError as error:
            chain.findings.append(Finding(position, f"not a well-formed record: {error}"))
            continue
        decoded[position] = (record, digest(entry.data))
    shifts, explained, inserted = _shifts(decoded, by_position)
    chain.findings.extend(shifts)
    for position, (record, _) in sorted(decoded.items()):
        if record.seq == position or position in explained:
            continue
        own = decoded.get(record.seq)
        if own is not None and own[0].seq == record.seq:
            problem = f"holds a second record {record.seq} (modified, or copied)"
        else:
            problem = f"holds record {record.seq} (moved from its position)"
        chain.findings.append(Finding(position, problem))
    chain.findings.extend(_links(decoded, inserted))
    chain.findings.sort(key=lambda finding: finding.position or 0)
    chain.records = decoded
    return chain


def _runs(decoded: dict[int, tuple[Record, str]]) -> list[tuple[int, int, int]]:
    """Runs of consecutive positions whose records all sit the same distance from their own
    position: (first position, last position, distance)."""
    runs: list[tuple[int, int, int]] = []
    for position, (record, _) in sorted(decoded.items()):
        offset = position - record.seq
        if offset == 0:
            continue
        if runs and runs[-1][1] == position - 1 and runs[-1][2] == offset:
            runs[-1] = (runs[-1][0], position, offset)
        else:
            runs.append((position, position, offset))
    return runs


def _shifts(
    decoded: dict[int, tuple[Record, str]], by_position: dict[int, Stored]
) -> tuple[list[Finding], set[int], set[int]]:
    """Records shifted together to the log's end, as when records were inserted or removed
    and all the rest moved along to close the gap: one finding where it happened, not one per
    moved record. Returns the findings, the positions they explain and those inserted."""
    present_seqs = {record.seq for record, _ in decoded.values()}
    found: list[Finding] = []
    explained: set[int] = set()
    inserted: set[int] = set()
    last = max(by_position, default=0)
    for first, end, offset in _runs(decoded):
        if end != max(decoded):
            continue  # records moved within the log: each is named where it is
        held = f"positions {first}..{end} hold records {first - offset}..{end - offset}"
        if offset > 0:
            place = range(first - offset, first)
            before = first - offset - 1
            linked = GENESIS if before == 0 else (decoded.get(before) or (None, None))[1]
            if decoded[first][0].prev != linked or not all(
                _foreign(p, decoded, by_position, last) for p in place
            ):
                continue
            for position in place:
                found.append(Finding(position, f"inserted; the records after it moved on ({held})"))
            inserted.update(place)
        else:
            removed = range(first, first - offset)
            if any(seq in present_seqs for seq in removed):
                continue
            which = f"records {first}..{removed[-1]}" if len(removed) > 1 else "this record"
            found.append(
                Finding(first, f"missing: {which} removed, and the ones after moved back ({held})")
            )
        explained.update(range(first, end + 1))
    return found, explained, inserted


def _foreign(
    position: int, decoded: dict[int, tuple[Record, str]], by_position: dict[int, Stored], last: int
) -> bool:
    """Whether what ``position`` holds does not belong there: an unreadable record, one that
    claims this very position, one beyond the log's end, or a copy of a record that is in its
    own place. A genuine record moved here (a swap) is none of these."""
    entry = by_position.get(position)
    if entry is None or entry.data is None:
        return False
    if position not in decoded:
        return True
    seq = decoded[position][0].seq
    if seq == position or not 1 <= seq <= last:
        return True
    return seq in decoded and decoded[seq][0].seq == seq


def _links(decoded: dict[int, tuple[Record, str]], inserted: set[int]) -> list[Finding]:
    """Each record must carry the digest of the record before it in the chain (found by its
    number, so that a record moved elsewhere is still followed)."""
    holders: dict[int, list[int]] = {}
    for position, (record, _) in sorted(decoded.items()):
        if position not in inserted:
            holders.setdefault(record.seq, []).append(position)

    def holder(seq: int, near: int) -> int | None:
        positions = holders.get(seq, [])
        if near in positions:
            return near
        return positions[0] if len(positions) == 1 else None

    found = []
    for position, (record, sha) in sorted(decoded.items()):
        if position in inserted:
            continue
        if record.seq == 1:
            if record.prev != GENESIS:
                found.append(Finding(position, f"does not start the chain: prev is {record.prev}"))
            continue
        before = holder(record.seq - 1, position - 1)
        if before is None or record.prev == decoded[before][1]:
            continue  # the one before is missing or unreadable: named where it should be
        after = holder(record.seq + 1, position + 1)
        if after is None or decoded[after][0].prev == sha:
            # What follows this record still links to it: the change is in the one before.
            found.append(
                Finding(
                    before,
                    f"modified: record {position} was chained to {record.prev}, record {before} "
                    f"now has {decoded[before][1]}",
                )
            )
        else:
            found.append(
                Finding(
                    position,
                    f"does not follow record {before} (record {before} or {position} was modified)",
                )
            )
    return found


def check_claims(chain: Chain, claims: Iterable[Claim]) -> list[Finding]:
    """Each claim must name a record of the chain, about that object, with that digest."""
    found = []
    for claim in claims:
        entry = chain.records.get(claim.head.seq)
        if entry is None:
            found.append(
                Finding(
                    claim.head.seq, f"{claim.source} names it, but the chain has no such record"
                )
            )
            continue
        record, sha = entry
        if sha != claim.head.digest:
            found.append(
                Finding(
                    claim.head.seq,
                    f"{claim.source} says its digest is {claim.head.digest}, the record has {sha}",
                )
            )
        elif record.subject.uid != claim.uid:
            found.append(
                Finding(
                    claim.head.seq, f"{claim.source} names it, but it is about {record.subject}"
                )
            )
    return found


def read_store(client: Any, location: Location) -> tuple[list[Stored], list[str]]:
    """Every record position under the log's prefix, with each version the bucket keeps, and
    the keys there that are not record positions."""
    prefix = location.prefix + "records/"
    try:
        return _read_versions(client, location, prefix)
    except Exception as error:
        if error_code(error) not in ("NotImplemented", "MethodNotAllowed"):
            raise
    stored, stray = [], []
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix)
    for page in pages:
        for item in page.get("Contents", []):
            position = position_of(location.prefix, item["Key"])
            if position is None:
                stray.append(item["Key"])
                continue
            body = client.get_object(Bucket=location.bucket, Key=item["Key"])["Body"].read()
            stored.append(Stored(position, body, (body,)))
    return stored, stray


def _read_versions(client: Any, location: Location, prefix: str) -> tuple[list[Stored], list[str]]:
    # (key) -> [(last modified, listing order, version id, latest, delete marker)]; the store
    # lists each key's versions newest first, which breaks ties within one second.
    versions: dict[str, list[tuple[str, int, str, bool, bool]]] = {}
    order = 0
    pages = client.get_paginator("list_object_versions").paginate(
        Bucket=location.bucket, Prefix=prefix
    )
    for page in pages:
        listed = [(item, False) for item in page.get("Versions", [])]
        listed += [(item, True) for item in page.get("DeleteMarkers", [])]
        for item, marker in listed:
            order -= 1
            versions.setdefault(item["Key"], []).append(
                (
                    item["LastModified"].isoformat(),
                    order,
                    str(item.get("VersionId") or "null"),
                    bool(item.get("IsLatest")),
                    marker,
                )
            )
    stored, stray = [], []
    for key, entries in sorted(versions.items()):
        position = position_of(location.prefix, key)
        if position is None:
            stray.append(key)
            continue
        history: list[bytes | None] = []
        current: bytes | None = None
        for _, _, version_id, latest, marker in sorted(entries):
            body = None
            if not marker:
                extra = {} if version_id == "null" else {"VersionId": version_id}
                body = client.get_object(Bucket=location.bucket, Key=key, **extra)["Body"].read()
            history.append(body)
            if latest:
                current = body
        stored.append(Stored(position, current, tuple(history)))
    return stored, stray
