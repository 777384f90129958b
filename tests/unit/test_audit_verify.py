"""Checking an audit chain held in memory: each kind of tampering named at its position, the
claims made about the chain, and the story `sovai audit show` tells from it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from sovereign_operator.audit.claims import Unreadable, mlflow_claims, status_claims, version_claims
from sovereign_operator.audit.cli import parse_ref, verify_report
from sovereign_operator.audit.log import Location
from sovereign_operator.audit.records import GENESIS, Head, Record, Subject, digest, encode
from sovereign_operator.audit.story import essentials, render_story
from sovereign_operator.audit.verify import Chain, Claim, Finding, Stored, check_chain, check_claims

JOB = Subject("FineTuneJob", "team-a", "faq", "uid-job")
OTHER = Subject("FineTuneJob", "team-a", "other", "uid-other")
LOG = Location.parse("s3://audit/cluster")
Event = tuple[Subject, str, dict[str, Any]]


def build(events: Sequence[Event], start: int = 1, prev: str = GENESIS) -> list[bytes]:
    """The stored bytes of a chain of these events, one minute apart."""
    chain = []
    for seq, (subject, event, details) in enumerate(events, start):
        record = Record(
            seq=seq,
            prev=prev,
            time=f"2026-03-01T10:{seq:02d}:00.000000Z",
            writer="operator-0/1",
            subject=subject,
            event=event,
            key=f"{event}/{seq}",
            details=details,
        )
        data = encode(record)
        chain.append(data)
        prev = digest(data)
    return chain


EIGHT = build([(JOB if i % 2 else OTHER, "PhaseChanged", {"phase": f"p{i}"}) for i in range(8)])


def stored(chain: Sequence[bytes | None]) -> list[Stored]:
    return [Stored(seq, data, (data,)) for seq, data in enumerate(chain, 1) if data is not None]


def findings(chain: Sequence[bytes | None], stray: Sequence[str] = ()) -> list[str]:
    return [str(finding) for finding in check_chain(stored(chain), stray).findings]


def named(chain: Sequence[bytes | None]) -> set[int | None]:
    return {finding.position for finding in check_chain(stored(chain)).findings}


def edited(chain: Sequence[bytes], k: int, edit: Callable[[bytes], bytes]) -> list[bytes]:
    changed = edit(chain[k - 1])
    assert changed != chain[k - 1], "the edit changed nothing: the test would prove nothing"
    return [*chain[: k - 1], changed, *chain[k:]]


def forged(seq: int, prev: str) -> bytes:
    return build([(JOB, "PhaseChanged", {"phase": "Succeeded"})], start=seq, prev=prev)[0]


def test_an_untouched_chain_has_no_findings() -> None:
    chain = check_chain(stored(EIGHT))
    assert chain.findings == []
    assert chain.ok
    assert chain.head == Head(8, digest(EIGHT[-1]))
    assert [seq for seq, _ in chain.about("uid-job")] == [2, 4, 6, 8]


def test_an_empty_log_has_the_genesis_head() -> None:
    chain = check_chain([])
    assert (chain.ok, chain.head) == (True, Head(0, GENESIS))


def _edit_prev(data: bytes) -> bytes:
    at = data.index(b'"prev":"sha256:') + len(b'"prev":"sha256:')
    flipped = b"1" if data[at : at + 1] != b"1" else b"2"
    return data[:at] + flipped + data[at + 1 :]


EDITS: dict[str, Callable[[bytes], bytes]] = {
    # One byte each: a letter of the details, of the writer, a quote, a digit of prev or seq.
    "details": lambda data: data.replace(b'"phase":"p', b'"phase":"q'),
    "writer": lambda data: data.replace(b"operator-0/1", b"operator-0/2"),
    "syntax": lambda data: data.replace(b'"event"', b"'event\"", 1),
    "prev": _edit_prev,
    "seq": lambda data: data.replace(b'"seq":', b'"seq":9', 1),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
@pytest.mark.parametrize("k", [1, 4, 7])
def test_a_byte_edited_in_a_record_is_named_at_its_position(edit: str, k: int) -> None:
    assert named(edited(EIGHT, k, EDITS[edit])) == {k}


def test_an_edited_record_is_named_as_modified() -> None:
    chain = edited(EIGHT, 4, EDITS["details"])
    assert findings(chain) == [
        f"record 4: modified: record 5 was chained to {digest(EIGHT[3])}, record 4 now has "
        f"{digest(chain[3])}"
    ]


def test_an_unreadable_record_says_why() -> None:
    assert findings(edited(EIGHT, 4, EDITS["syntax"])) == [
        "record 4: not a well-formed record: not canonical JSON: Expecting property name "
        "enclosed in double quotes: line 1 column 27 (char 26)"
    ]


def test_the_last_record_edited_is_caught_by_the_head_claimed_for_it() -> None:
    """No record follows the last one: the chain alone cannot tell; the status head can."""
    chain = check_chain(stored(edited(EIGHT, 8, EDITS["details"])))
    assert chain.findings == []
    claim = Claim("FineTuneJob team-a/faq status.audit.head", "uid-job", Head(8, digest(EIGHT[7])))
    assert check_claims(chain, [claim]) == [
        Finding(
            8,
            f"FineTuneJob team-a/faq status.audit.head says its digest is {digest(EIGHT[7])}, "
            f"the record has {chain.head.digest}",
        )
    ]


@pytest.mark.parametrize("k", [1, 4, 7])
def test_a_deleted_record_is_missing_at_its_position(k: int) -> None:
    chain = [*EIGHT[: k - 1], None, *EIGHT[k:]]
    assert findings(chain) == [f"record {k}: missing (deleted, or never written)"]


def test_the_last_record_deleted_is_caught_by_the_head_claimed_for_it() -> None:
    chain = check_chain(stored(EIGHT[:7]))
    assert chain.findings == []
    claim = Claim("FineTuneJob team-a/faq status.audit.head", "uid-job", Head(8, digest(EIGHT[7])))
    assert [str(f) for f in check_claims(chain, [claim])] == [
        "record 8: FineTuneJob team-a/faq status.audit.head names it, but the chain has no "
        "such record"
    ]


@pytest.mark.parametrize("k", [1, 4, 7])
def test_two_records_swapped_are_both_named_moved(k: int) -> None:
    chain = [*EIGHT[: k - 1], EIGHT[k], EIGHT[k - 1], *EIGHT[k + 1 :]]
    assert findings(chain) == [
        f"record {k}: holds record {k + 1} (moved from its position)",
        f"record {k + 1}: holds record {k} (moved from its position)",
    ]


@pytest.mark.parametrize("k", [1, 4, 8])
def test_a_record_inserted_with_the_rest_shifted_on_is_named_inserted(k: int) -> None:
    """The forger gives it the position it takes and links it to the record before, as a
    writer would: only what follows gives it away."""
    prev = GENESIS if k == 1 else digest(EIGHT[k - 2])
    chain = [*EIGHT[: k - 1], forged(k, prev), *EIGHT[k - 1 :]]
    assert findings(chain) == [
        f"record {k}: inserted; the records after it moved on "
        f"(positions {k + 1}..9 hold records {k}..8)"
    ]


@pytest.mark.parametrize(
    "insert",
    [forged(99, GENESIS), forged(2, GENESIS), b'{"not": "a record"}'],
    ids=["beyond-the-end", "copy-of-a-number", "unreadable"],
)
def test_a_clumsy_insertion_is_named_inserted_too(insert: bytes) -> None:
    chain = [*EIGHT[:3], insert, *EIGHT[3:]]
    assert named(chain) == {4}
    assert any("inserted" in line for line in findings(chain))


def test_a_record_removed_with_the_rest_moved_back_is_named_missing() -> None:
    assert findings([*EIGHT[:3], *EIGHT[4:]]) == [
        "record 4: missing: this record removed, and the ones after moved back "
        "(positions 4..7 hold records 5..8)"
    ]


def test_a_copy_of_a_record_in_its_own_place_is_named() -> None:
    assert findings([*EIGHT[:3], EIGHT[5], *EIGHT[4:]]) == [
        "record 4: holds a second record 6 (modified, or copied)"
    ]


def test_a_key_that_is_not_a_record_position_is_stray() -> None:
    assert findings(EIGHT, ["cluster/records/5.json"]) == [
        "log: cluster/records/5.json is not a record position (inserted by hand?)"
    ]


def test_a_first_record_must_start_the_chain() -> None:
    chain = build([(JOB, "PolicyBound", {})], prev="sha256:" + "1" * 64)
    assert findings(chain) == [f"record 1: does not start the chain: prev is sha256:{'1' * 64}"]


# -- versions the store keeps (Object Lock) -----------------------------------------------------


def test_a_rewritten_version_names_the_original_the_store_keeps() -> None:
    changed = EDITS["details"](EIGHT[3])
    versions = [*stored(EIGHT[:3]), Stored(4, changed, (EIGHT[3], changed)), *stored(EIGHT)[4:]]
    assert [str(f) for f in check_chain(versions).findings] == [
        f"record 4: rewritten: the store keeps 2 versions; the original is {digest(EIGHT[3])}",
        f"record 4: modified: record 5 was chained to {digest(EIGHT[3])}, record 4 now has "
        f"{digest(changed)}",
    ]


def test_a_delete_marker_is_found_even_on_the_last_record() -> None:
    versions = [*stored(EIGHT[:7]), Stored(8, None, (EIGHT[7], None))]
    assert [str(f) for f in check_chain(versions).findings] == [
        "record 8: deleted (a delete marker hides it; the store still keeps the original)"
    ]


def test_a_record_deleted_then_written_again_is_named() -> None:
    versions = [*stored(EIGHT[:7]), Stored(8, EIGHT[7], (EIGHT[7], None, EIGHT[7]))]
    assert [str(f) for f in check_chain(versions).findings] == [
        "record 8: was deleted, then written again"
    ]


# -- claims -------------------------------------------------------------------------------------


@pytest.fixture
def intact() -> Chain:
    return check_chain(stored(EIGHT))


def test_a_true_claim_has_no_finding(intact: Chain) -> None:
    assert check_claims(intact, [Claim("status", "uid-job", Head(4, digest(EIGHT[3])))]) == []


@pytest.mark.parametrize(
    ("claim", "problem"),
    [
        (
            Claim("status", "uid-job", Head(4, "sha256:" + "0" * 64)),
            f"record 4: status says its digest is sha256:{'0' * 64}, the record has "
            f"{digest(EIGHT[3])}",
        ),
        (
            Claim("status", "uid-other", Head(4, digest(EIGHT[3]))),
            "record 4: status names it, but it is about FineTuneJob team-a/faq",
        ),
        (
            Claim("status", "uid-job", Head(9, digest(EIGHT[3]))),
            "record 9: status names it, but the chain has no such record",
        ),
    ],
    ids=["wrong-digest", "wrong-subject", "absent"],
)
def test_a_false_claim_is_named_at_the_position_it_names(
    intact: Chain, claim: Claim, problem: str
) -> None:
    assert [str(f) for f in check_claims(intact, [claim])] == [problem]


HEAD = "4:sha256:" + "ab" * 32
AB = Head(4, "sha256:" + "ab" * 32)


def _obj(name: str, uid: str, audit: dict[str, Any] | None, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"namespace": "team-a", "name": name, "uid": uid}}
    if audit is not None or status:
        body["status"] = {**status, **({"audit": audit} if audit is not None else {})}
    return body


def test_status_claims_are_taken_from_objects_recording_into_this_log() -> None:
    objects = [
        _obj("faq", "u1", {"log": "s3://audit/cluster/", "head": HEAD, "admission": HEAD}),
        _obj("elsewhere", "u2", {"log": "s3://audit/other/", "head": HEAD}),
        _obj("bad", "u3", {"log": "s3://audit/cluster", "head": "4:sha1:ab"}),
        _obj("new", "u4", None),
        _obj("odd", "u5", {"log": "not a uri", "head": HEAD}),
    ]
    claims, found = status_claims(objects, "FineTuneJob", LOG)
    assert claims == [
        Claim("FineTuneJob team-a/faq status.audit.head", "u1", AB),
        Claim("FineTuneJob team-a/faq status.audit.admission", "u1", AB),
    ]
    assert found == [
        Finding(
            None,
            "FineTuneJob team-a/bad status.audit.head: '4:sha1:ab' is not an audit head "
            "(SEQ:sha256:HEX)",
        )
    ]


JOB_OBJECT = _obj(
    "faq",
    "u1",
    {"log": "s3://audit/cluster/", "head": HEAD, "admission": HEAD},
    mlflow={"modelName": "faq", "modelVersion": "3"},
)
WHO = "MLflow model faq version 3"


def _version(**tags: str) -> dict[str, Any]:
    return {
        "name": "faq",
        "version": "3",
        "tags": [{"key": k, "value": v} for k, v in tags.items()],
    }


@pytest.mark.parametrize(
    ("version", "claims", "problems"),
    [
        (
            _version(**{"sovai.audit.chain_head": HEAD, "sovai.job.uid": "u1"}),
            [Claim(f"{WHO} tag sovai.audit.chain_head", "u1", AB)],
            [],
        ),
        (
            _version(**{"sovai.audit.chain_head": HEAD, "sovai.job.uid": "u9"}),
            [Claim(f"{WHO} tag sovai.audit.chain_head", "u9", AB)],
            [f"log: {WHO} is tagged sovai.job.uid=u9, not FineTuneJob team-a/faq"],
        ),
        (
            _version(**{"sovai.job.uid": "u1"}),
            [],
            [f"log: {WHO} (FineTuneJob team-a/faq) has no sovai.audit.chain_head tag"],
        ),
        (
            _version(**{"sovai.audit.chain_head": "head", "sovai.job.uid": "u1"}),
            [],
            [
                f"log: {WHO} tag sovai.audit.chain_head: 'head' is not an audit head "
                "(SEQ:sha256:HEX)"
            ],
        ),
        (
            None,
            [],
            [f"log: FineTuneJob team-a/faq registered {WHO}, which MLflow does not have"],
        ),
    ],
    ids=["tagged", "another-job", "untagged", "malformed", "absent"],
)
def test_a_model_versions_tags_claim_the_jobs_admission(
    version: dict[str, Any] | None, claims: list[Claim], problems: list[str]
) -> None:
    found_claims, found = version_claims(JOB_OBJECT, version)
    assert (found_claims, [str(f) for f in found]) == (claims, problems)


def test_a_version_of_a_job_admitted_into_no_log_need_not_be_tagged() -> None:
    job = _obj("faq", "u1", {"log": "s3://audit/cluster/"}, mlflow=JOB_OBJECT["status"]["mlflow"])
    assert version_claims(job, _version()) == ([], [])


class FakeMlflow(BaseHTTPRequestHandler):
    """MLflow's REST answer for model-versions/get: version 3 of faq, nothing else."""

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path != "/api/2.0/mlflow/model-versions/get":
            self._answer(500, {"error_code": "INTERNAL_ERROR", "message": "unexpected path"})
        elif query == {"name": "faq", "version": "3"}:
            tags = {"sovai.audit.chain_head": HEAD, "sovai.job.uid": "u1"}
            self._answer(200, {"model_version": _version(**tags)})
        elif query.get("name") == "broken":
            self._answer(503, {"error_code": "TEMPORARILY_UNAVAILABLE"})
        else:
            self._answer(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no"})

    def _answer(self, status: int, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def mlflow() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeMlflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _job(name: str, version: str, log: str = "s3://audit/cluster/") -> dict[str, Any]:
    mlflow = {"modelName": name, "modelVersion": version}
    return _obj(name, "u1", {"log": log, "admission": HEAD}, mlflow=mlflow)


def test_mlflow_claims_are_read_over_its_rest_api(mlflow: str) -> None:
    jobs = [_job("faq", "3"), _job("gone", "1"), _job("faq", "7", log="s3://audit/other/")]
    claims, found = mlflow_claims(mlflow, jobs, LOG)
    assert claims == [Claim(f"{WHO} tag sovai.audit.chain_head", "u1", AB)]
    assert [str(f) for f in found] == [
        "log: FineTuneJob team-a/gone registered MLflow model gone version 1, which MLflow "
        "does not have"
    ]


def test_an_mlflow_that_fails_leaves_the_claims_unchecked(mlflow: str) -> None:
    with pytest.raises(Unreadable, match="answered 503 for model broken version 1"):
        mlflow_claims(mlflow, [_job("broken", "1")], LOG)


def test_an_mlflow_that_does_not_answer_leaves_the_claims_unchecked() -> None:
    with pytest.raises(Unreadable, match=r"cannot reach MLflow at http://127\.0\.0\.1:9/"):
        mlflow_claims("http://127.0.0.1:9/", [_job("faq", "3")], LOG)


def test_only_an_http_tracking_uri_can_be_read() -> None:
    with pytest.raises(Unreadable, match="only http"):
        mlflow_claims("file:///tmp/mlruns", [_job("faq", "3")], LOG)


# -- what verify prints -------------------------------------------------------------------------


def test_the_verify_report_of_an_intact_log(intact: Chain) -> None:
    claims = [Claim("status", "uid-job", Head(4, digest(EIGHT[3])))]
    assert verify_report(LOG, intact, "COMPLIANCE 365 days", claims, []) == [
        "log: s3://audit/cluster/",
        "records: 8",
        f"head: 8:{digest(EIGHT[7])}",
        "object lock: COMPLIANCE 365 days",
        "claims: 1 checked (status.audit of FineTuneJobs and ModelDeployments, MLflow model "
        "version tags)",
        "verified: every record is in its place, linked to the one before it",
    ]


def test_the_verify_report_names_each_finding() -> None:
    chain = check_chain(stored([*EIGHT[:3], None, *EIGHT[4:]]))
    assert verify_report(LOG, chain, None, None, chain.findings) == [
        "log: s3://audit/cluster/",
        "records: 7",
        f"head: 8:{digest(EIGHT[7])}",
        "no Object Lock: tampering is detected, not prevented",
        "claims: not checked (--no-cluster)",
        "record 4: missing (deleted, or never written)",
        "1 finding(s)",
    ]


# -- the story show tells -----------------------------------------------------------------------

DIGEST = "sha256:" + "ab" * 32
DATA = "sha256:" + "cd" * 32
POLICY = {"policy": "eu-only", "policyDigest": "sha256:" + "11" * 32, "regions": ["eu-west-par"]}
FAQ_V1 = Subject("FineTuneJob", "team-a", "faq", "uid-faq-1")
FAQ = Subject("FineTuneJob", "team-a", "faq", "uid-faq-2")
SERVE = Subject("ModelDeployment", "team-a", "faq-serve", "uid-serve")
STORY: list[Event] = [
    (FAQ_V1, "PolicyBound", POLICY),
    (FAQ_V1, "Deleted", {"phase": "Pending"}),
    (FAQ, "PolicyBound", POLICY),
    (
        FAQ,
        "Admitted",
        {
            "generation": 1,
            "baseModel": {"uri": "hf://mistralai/Mistral-7B-v0.3"},
            "datasets": {"training": "s3://eu-data/faq/train.jsonl"},
        },
    ),
    (FAQ, "ChildCreated", {"kind": "RayJob", "name": "faq-train", "uid": "uid-rayjob"}),
    (FAQ, "PodPlaced", {"pod": "faq-train-head", "node": "gpu-par-1", "region": "eu-west-par"}),
    (
        FAQ,
        "InputsVerified",
        {
            "datasets": {"training": {"uri": "s3://eu-data/faq/train.jsonl", "sha256": DATA}},
            "baseModel": {"uri": "hf://mistralai/Mistral-7B-v0.3", "revision": "e0bc86c"},
        },
    ),
    (FAQ, "ModelRegistered", {"modelUri": "models:/faq/3", "modelDigest": DIGEST, "runId": "r1"}),
    (FAQ, "ComputeAccounted", {"gpuHours": 1.25, "tokens": 120000, "energyKwh": 0.875}),
    (FAQ, "PhaseChanged", {"phase": "Succeeded"}),
    (SERVE, "PolicyBound", POLICY),
    (SERVE, "Admitted", {"generation": 1, "modelUri": "models:/faq/3", "sourceJob": "team-a/faq"}),
    (SERVE, "Served", {"modelUri": "models:/faq/3", "modelDigest": DIGEST, "replicas": 2}),
    (OTHER, "PhaseChanged", {"phase": "Running"}),
    (SERVE, "Stopped", {"reason": "Suspended"}),
]
POLICY_LINE = f"eu-only sha256:{'11' * 32}, regions eu-west-par"


def test_a_jobs_story_as_a_compliance_officer_reads_it() -> None:
    chain = check_chain(stored(build(STORY)))
    assert render_story(chain, "FineTuneJob", "team-a", "faq", LOG) == [
        "FineTuneJob team-a/faq (uid uid-faq-2)",
        "audit log s3://audit/cluster/: 15 records, chain intact",
        "1 earlier FineTuneJob(s) of this name were deleted and re-created (uid uid-faq-1); "
        "this is the latest",
        "",
        "Summary",
        f"  policy          eu-only sha256:{'11' * 32}",
        "  regions         eu-west-par",
        "  admitted        generation 1",
        f"  training data   s3://eu-data/faq/train.jsonl {DATA}",
        "  base model      hf://mistralai/Mistral-7B-v0.3 @ e0bc86c",
        "  pods            faq-train-head on node gpu-par-1 in region eu-west-par",
        f"  model           models:/faq/3 {DIGEST}, MLflow run r1",
        "  compute         energyKwh 0.875, gpuHours 1.25, tokens 120000",
        "  phase           Succeeded",
        "  served by       team-a/faq-serve: served from 2026-03-01T10:13:00Z: models:/faq/3 "
        f"{DIGEST}, 2 replica(s) (the digest the job registered); stopped "
        "2026-03-01T10:15:00Z",
        "",
        "Records",
        f"      3  2026-03-01T10:03:00Z  PolicyBound      {POLICY_LINE}",
        "      4  2026-03-01T10:04:00Z  Admitted         generation 1: base model "
        "hf://mistralai/Mistral-7B-v0.3, training s3://eu-data/faq/train.jsonl",
        "      5  2026-03-01T10:05:00Z  ChildCreated     RayJob faq-train (uid uid-rayjob)",
        "      6  2026-03-01T10:06:00Z  PodPlaced        faq-train-head on node gpu-par-1 in "
        "region eu-west-par",
        "      7  2026-03-01T10:07:00Z  InputsVerified   training s3://eu-data/faq/train.jsonl "
        f"{DATA}, base model hf://mistralai/Mistral-7B-v0.3 @ e0bc86c",
        f"      8  2026-03-01T10:08:00Z  ModelRegistered  models:/faq/3 {DIGEST}, MLflow run r1",
        "      9  2026-03-01T10:09:00Z  ComputeAccounted energyKwh 0.875, gpuHours 1.25, "
        "tokens 120000",
        "     10  2026-03-01T10:10:00Z  PhaseChanged     Succeeded",
        "     11  2026-03-01T10:11:00Z  PolicyBound      [ModelDeployment team-a/faq-serve] "
        f"{POLICY_LINE}",
        "     12  2026-03-01T10:12:00Z  Admitted         [ModelDeployment team-a/faq-serve] "
        "generation 1: model models:/faq/3, from FineTuneJob team-a/faq",
        "     13  2026-03-01T10:13:00Z  Served           [ModelDeployment team-a/faq-serve] "
        f"models:/faq/3 {DIGEST}, 2 replica(s)",
        "     15  2026-03-01T10:15:00Z  Stopped          [ModelDeployment team-a/faq-serve] "
        "Suspended",
    ]


def test_a_deployments_story_checks_the_digest_against_the_jobs() -> None:
    story = [*STORY[:13]]
    story[12] = (SERVE, "Served", {"modelUri": "models:/faq/3", "modelDigest": DATA, "replicas": 1})
    chain = check_chain(stored(build(story)))
    lines = render_story(chain, "ModelDeployment", "team-a", "faq-serve", LOG)
    assert lines is not None
    assert lines[3:11] == [
        "Summary",
        f"  policy          eu-only sha256:{'11' * 32}",
        "  regions         eu-west-par",
        "  admitted        generation 1",
        "  model           models:/faq/3",
        f"  trained by      FineTuneJob team-a/faq, which registered {DIGEST}",
        "  pods            none recorded",
        f"  served          models:/faq/3 {DATA}, 1 replica(s) (NOT the digest the job "
        f"registered, {DIGEST})",
    ]


def test_a_story_starts_with_the_chains_findings_and_marks_their_records() -> None:
    chain_bytes = build(STORY)
    chain = check_chain(stored(edited(chain_bytes, 5, _rename)))
    lines = render_story(chain, "FineTuneJob", "team-a", "faq", LOG)
    assert lines is not None
    assert lines[1:3] == [
        "WARNING: the audit log s3://audit/cluster/ has 1 finding(s); what follows may be "
        "incomplete or altered (records marked ! are named below):",
        f"  record 5: modified: record 6 was chained to {digest(chain_bytes[4])}, record 5 now "
        f"has {chain.records[5][1]}",
    ]
    assert [line[:8] for line in lines if "ChildCreated" in line] == ["!     5 "]


def _rename(data: bytes) -> bytes:
    return data.replace(b'"name":"faq-train"', b'"name":"faq-trial"')


def test_no_story_for_an_object_the_log_never_saw() -> None:
    chain = check_chain(stored(build(STORY)))
    assert render_story(chain, "FineTuneJob", "team-b", "faq", LOG) is None
    assert render_story(chain, "ModelDeployment", "team-a", "faq", LOG) is None


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("ftj/faq", ("FineTuneJob", "faq")),
        ("FineTuneJob/faq", ("FineTuneJob", "faq")),
        ("finetunejobs/faq", ("FineTuneJob", "faq")),
        ("md/faq-serve", ("ModelDeployment", "faq-serve")),
        ("modeldeployment/faq-serve", ("ModelDeployment", "faq-serve")),
    ],
)
def test_an_object_is_named_kind_slash_name(text: str, ref: tuple[str, str]) -> None:
    assert parse_ref(text) == ref


@pytest.mark.parametrize("text", ["faq", "pod/faq", "ftj/", "ftj/team-a/faq"])
def test_other_names_are_refused(text: str) -> None:
    with pytest.raises(Unreadable, match="name an object as ftj/NAME or md/NAME"):
        parse_ref(text)


@pytest.mark.parametrize(
    ("event", "details", "line"),
    [
        ("Refused", {"generation": 2, "reason": "RegionNotAllowed", "message": "us-east-1"},
         "generation 2: RegionNotAllowed: us-east-1"),
        ("PhaseChanged", {"phase": "Failed", "reason": "OOM", "message": "worker 1"},
         "Failed (OOM): worker 1"),
        ("PolicyChanged", {**POLICY, "previousDigest": "sha256:" + "22" * 32},
         f"eu-only sha256:{'11' * 32} (was sha256:{'22' * 32}), regions eu-west-par"),
        ("Served", {"modelUri": "s3://m", "replicas": 1, "url": "http://x:8000"},
         "s3://m, 1 replica(s) at http://x:8000"),
        ("Scaled", {"replicas": 3}, "3 replica(s)"),
        ("Deleted", {}, ""),
        ("ComputeAccounted", {"trainingFlops": 1.2e15, "method": "lora"},
         "method lora, trainingFlops 1.2e+15"),
        ("SomethingNew", {"b": [1, 2], "a": "x"}, "a x, b [1,2]"),
        ("PodPlaced", {"pod": ["not", "text"]},
         '["not","text"] on node (not recorded) in region (not recorded)'),
        ("InputsVerified", {"datasets": "not a mapping"}, "datasets not a mapping"),
    ],
)  # fmt: skip
def test_each_record_shows_its_essentials_in_one_line(
    event: str, details: dict[str, Any], line: str
) -> None:
    assert essentials(event, details) == line
