"""Audit records: one canonical byte form per record, refused in any other form, and the heads,
keys and locations that name them."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from sovereign_operator.audit.log import Location
from sovereign_operator.audit.records import (
    GENESIS,
    Head,
    Record,
    RecordError,
    Subject,
    decode,
    digest,
    encode,
    parse_head,
    position_of,
    record_key,
)

SUBJECT = Subject("FineTuneJob", "team-a", "faq", "0c6f-uid")
RECORD = Record(
    seq=3,
    prev=GENESIS,
    time="2026-03-01T10:00:00.000000Z",
    writer="operator-0/7",
    subject=SUBJECT,
    event="Admitted",
    key="admitted/1",
    details={"generation": 1, "datasets": {"training": "s3://eu-data/faq/train.jsonl"}},
)
ZEROS = b"0" * 64
CANONICAL = (
    b'{"details":{"datasets":{"training":"s3://eu-data/faq/train.jsonl"},"generation":1},'
    b'"event":"Admitted","key":"admitted/1","prev":"sha256:'
    + ZEROS
    + b'","schema":"sovereign-ai.eu/audit/v1","seq":3,"subject":{"kind":"FineTuneJob",'
    b'"name":"faq","namespace":"team-a","uid":"0c6f-uid"},"time":"2026-03-01T10:00:00.000000Z",'
    b'"writer":"operator-0/7"}'
)


def test_a_record_has_one_canonical_form() -> None:
    assert encode(RECORD) == CANONICAL


def test_the_order_details_were_built_in_does_not_change_the_bytes() -> None:
    reordered = Record(
        **{**RECORD.__dict__, "details": {"generation": 1, "datasets": RECORD.details["datasets"]}}
    )
    assert encode(reordered) == encode(RECORD)


def test_text_beyond_ascii_is_escaped() -> None:
    record = Record(**{**RECORD.__dict__, "details": {"message": "données refusées"}})
    assert b'"message":"donn\\u00e9es refus\\u00e9es"' in encode(record)
    assert decode(encode(record)).details == {"message": "données refusées"}


def test_decode_returns_the_record_encoded() -> None:
    assert decode(CANONICAL) == Record(**{**RECORD.__dict__, "details": dict(RECORD.details)})


def test_the_digest_is_the_sha256_of_the_stored_bytes() -> None:
    assert digest(CANONICAL) == "sha256:" + hashlib.sha256(CANONICAL).hexdigest()


def _as_dict() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(CANONICAL)
    return loaded


def _with(**fields: Any) -> bytes:
    return json.dumps({**_as_dict(), **fields}, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (json.dumps(_as_dict(), sort_keys=True).encode(), "not in canonical form"),
        (json.dumps(_as_dict(), indent=1, sort_keys=True).encode(), "not in canonical form"),
        (
            json.dumps(dict(reversed(_as_dict().items())), separators=(",", ":")).encode(),
            "not in canonical form",
        ),
        (CANONICAL + b"\n", "not in canonical form"),
        (_with(extra="field"), "not in canonical form"),
        (_with(seq="3"), "not in canonical form"),
        (_with(seq=True), "not in canonical form"),
        (_with(schema="sovereign-ai.eu/audit/v0"), "not a sovereign-ai.eu/audit/v1 record"),
        (_with(prev="sha256:abc"), "is not a sha256 digest"),
        (_with(details=[["generation", 1]]), "not in canonical form"),
        (CANONICAL.replace(b'"event":"Admitted",', b""), "missing or malformed field"),
        (CANONICAL.replace(b"team-a", "équipe".encode()), "not canonical JSON"),
        (CANONICAL[:-1], "not canonical JSON"),
        (b"[]", "not a sovereign-ai.eu/audit/v1 record"),
    ],
    ids=[
        "spaced",
        "indented",
        "keys-unsorted",
        "newline",
        "extra-field",
        "seq-as-text",
        "seq-as-bool",
        "other-schema",
        "prev-not-a-digest",
        "details-as-pairs",
        "missing-event",
        "raw-utf8",
        "truncated",
        "not-an-object",
    ],
)
def test_decode_refuses_anything_but_the_canonical_bytes(data: bytes, problem: str) -> None:
    with pytest.raises(RecordError, match=problem):
        decode(data)


@pytest.mark.parametrize(
    ("text", "head"),
    [
        ("1:sha256:" + "a" * 64, Head(1, "sha256:" + "a" * 64)),
        (" 42:sha256:" + "0f" * 32 + "\n", Head(42, "sha256:" + "0f" * 32)),
        ("999999999999:" + GENESIS, Head(999999999999, GENESIS)),
    ],
)
def test_a_head_is_position_and_digest(text: str, head: Head) -> None:
    assert parse_head(text) == head
    assert parse_head(str(head)) == head


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256:" + "a" * 64,
        "1:" + "a" * 64,
        "1:sha256:" + "A" * 64,
        "1:sha256:" + "a" * 63,
        "-1:sha256:" + "a" * 64,
        "1000000000000:sha256:" + "a" * 64,
        "1:sha1:" + "a" * 40,
    ],
)
def test_anything_else_is_not_a_head(text: str) -> None:
    with pytest.raises(RecordError, match="is not an audit head"):
        parse_head(text)


@pytest.mark.parametrize(
    ("prefix", "seq", "key"),
    [
        ("cluster/", 1, "cluster/records/000000000001.json"),
        ("", 42, "records/000000000042.json"),
        ("a/b/", 999999999999, "a/b/records/999999999999.json"),
    ],
)
def test_record_keys_sort_in_chain_order_and_name_their_position(
    prefix: str, seq: int, key: str
) -> None:
    assert record_key(prefix, seq) == key
    assert position_of(prefix, key) == seq


@pytest.mark.parametrize(
    "key",
    [
        "cluster/records/1.json",
        "cluster/records/000000000001.json.bak",
        "cluster/records/00000000000x.json",
        "cluster/records/sub/000000000001.json",
        "other/records/000000000001.json",
        "cluster/000000000001.json",
    ],
)
def test_other_keys_name_no_position(key: str) -> None:
    assert position_of("cluster/", key) is None


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix", "text"),
    [
        ("s3://audit", "audit", "", "s3://audit/"),
        ("s3://audit/", "audit", "", "s3://audit/"),
        ("s3://audit/cluster", "audit", "cluster/", "s3://audit/cluster/"),
        ("s3://audit//eu/cluster/", "audit", "eu/cluster/", "s3://audit/eu/cluster/"),
    ],
)
def test_a_log_location_is_a_bucket_and_a_prefix(
    uri: str, bucket: str, prefix: str, text: str
) -> None:
    location = Location.parse(uri)
    assert (location.bucket, location.prefix, str(location)) == (bucket, prefix, text)
    assert Location.parse(text) == location


@pytest.mark.parametrize("uri", ["audit/cluster", "s3:///cluster", "gs://audit/cluster", ""])
def test_a_location_must_be_an_s3_uri(uri: str) -> None:
    with pytest.raises(ValueError, match="is not an s3://bucket/prefix URI"):
        Location.parse(uri)
