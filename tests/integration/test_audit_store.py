"""The audit log in the cluster's real S3 store (SeaweedFS): tampering named by
`sovai audit verify` at its position, Object Lock keeping the originals, two writers making one
chain, and a writer killed while appending.

Each test writes its own log under a fresh prefix of one of two buckets made for this module:
SeaweedFS grows volumes for each bucket that holds data, and the cluster's store has room for
few buckets (docs/control-plane.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sovereign_operator.audit.log import AuditLog, Location
from sovereign_operator.audit.records import Fact, Head, Record, Subject, digest, encode, record_key
from sovereign_operator.audit.verify import Chain, Claim, check_chain, check_claims, read_store
from sovereign_operator.cli import main
from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.s3store import S3Credentials, admin_client, make_locked_bucket

from .operator_process import finetunejob, ftj, setup_namespace

pytestmark = pytest.mark.integration

JOBS = (
    Subject("FineTuneJob", "team-a", "faq", "uid-faq"),
    Subject("FineTuneJob", "team-a", "summaries", "uid-summaries"),
)
KILL_AFTER = 5  # records the doomed writer appends before it is killed


@pytest.fixture(scope="module")
def store(cluster: LocalCluster) -> S3Credentials:
    assert cluster.s3_credentials is not None, "the integration cluster runs its S3 store"
    return cluster.s3_credentials


@pytest.fixture(scope="module")
def plain(store: S3Credentials) -> str:
    """A bucket without Object Lock: records can be changed and deleted for good."""
    bucket = f"audit-plain-{uuid.uuid4().hex[:8]}"
    admin_client(store).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(scope="module")
def locked(store: S3Credentials) -> str:
    """A bucket as a compliance-minded administrator makes one: Object Lock, COMPLIANCE."""
    bucket = f"audit-locked-{uuid.uuid4().hex[:8]}"
    make_locked_bucket(store, bucket)
    return bucket


@pytest.fixture
def env(store: S3Credentials, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment `sovai audit` runs in: the store's keys for boto3's own chain, the
    endpoint and region as the operator's settings name them."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "SOVAI_AUDIT_URI"):
        monkeypatch.delenv(name, raising=False)
    settings = {
        "AWS_ACCESS_KEY_ID": store.access_key,
        "AWS_SECRET_ACCESS_KEY": store.secret_key,
        "SOVAI_AUDIT_ENDPOINT": store.endpoint,
        "SOVAI_AUDIT_REGION": store.region,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return settings


class Log:
    """One log, under a fresh prefix: its writer, and the store under it."""

    def __init__(self, store: S3Credentials, bucket: str) -> None:
        self.s3 = admin_client(store)
        self.location = Location.parse(f"s3://{bucket}/{uuid.uuid4().hex[:8]}")
        self.uri = str(self.location)

    def writer(self, name: str) -> AuditLog:
        return AuditLog(self.s3, self.location, writer=name)

    def write(self, count: int) -> list[bytes]:
        """``count`` records about two jobs; returns their stored bytes."""
        writer = self.writer("operator-0")
        for i in range(count):
            subject = JOBS[i % 2]
            writer.append([Fact(subject, "PhaseChanged", f"phase/{i}", {"phase": f"step {i}"})])
        assert writer.head.seq == count
        return [self.get(seq) for seq in range(1, count + 1)]

    def key(self, seq: int) -> str:
        return record_key(self.location.prefix, seq)

    def get(self, seq: int) -> bytes:
        answer = self.s3.get_object(Bucket=self.location.bucket, Key=self.key(seq))
        data: bytes = answer["Body"].read()
        return data

    def put(self, seq: int, data: bytes) -> None:
        self.s3.put_object(Bucket=self.location.bucket, Key=self.key(seq), Body=data)

    def delete(self, seq: int, version: str | None = None) -> None:
        extra = {"VersionId": version} if version else {}
        self.s3.delete_object(Bucket=self.location.bucket, Key=self.key(seq), **extra)

    def chain(self) -> Chain:
        stored, stray = read_store(self.s3, self.location)
        return check_chain(stored, stray)


Verify = Callable[..., tuple[int, list[str]]]


@pytest.fixture
def verify(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> Verify:
    """`sovai audit verify --no-cluster` in this process: its exit status and its lines."""

    def run(uri: str, *more: str) -> tuple[int, list[str]]:
        capsys.readouterr()
        status = main(["audit", "verify", "--no-cluster", "--log", uri, *more])
        captured = capsys.readouterr()
        return status, (captured.out + captured.err).splitlines()

    return run


def edit(data: bytes) -> bytes:
    """One byte changed, where a reader would not see it: a letter in the details."""
    changed = data.replace(b'"phase":"step', b'"phase":"stop', 1)
    assert changed != data
    assert len(changed) == len(data)
    return changed


# -- tampering with an unlocked log -------------------------------------------------------------


def test_an_untouched_log_verifies(store: S3Credentials, plain: str, verify: Verify) -> None:
    log = Log(store, plain)
    written = log.write(8)
    status, lines = verify(log.uri)
    assert (status, lines) == (
        0,
        [
            f"log: {log.uri}",
            "records: 8",
            f"head: 8:{digest(written[-1])}",
            "no Object Lock: tampering is detected, not prevented",
            "claims: not checked (--no-cluster)",
            "verified: every record is in its place, linked to the one before it",
        ],
    )


def test_a_byte_edited_is_named_at_its_record(
    store: S3Credentials, plain: str, verify: Verify
) -> None:
    log = Log(store, plain)
    written = log.write(8)
    log.put(4, edit(written[3]))
    status, lines = verify(log.uri)
    assert status == 1
    assert lines[5:] == [
        f"record 4: modified: record 5 was chained to {digest(written[3])}, record 4 now has "
        f"{digest(edit(written[3]))}",
        "1 finding(s)",
    ]


def test_a_deleted_record_is_named_missing(
    store: S3Credentials, plain: str, verify: Verify
) -> None:
    log = Log(store, plain)
    log.write(8)
    log.delete(4)
    status, lines = verify(log.uri)
    assert (status, lines[5:]) == (
        1,
        ["record 4: missing (deleted, or never written)", "1 finding(s)"],
    )


def test_two_records_swapped_are_both_named(
    store: S3Credentials, plain: str, verify: Verify
) -> None:
    log = Log(store, plain)
    written = log.write(8)
    log.put(4, written[4])
    log.put(5, written[3])
    status, lines = verify(log.uri)
    assert (status, lines[5:]) == (
        1,
        [
            "record 4: holds record 5 (moved from its position)",
            "record 5: holds record 4 (moved from its position)",
            "2 finding(s)",
        ],
    )


def test_a_forged_record_inserted_is_named(
    store: S3Credentials, plain: str, verify: Verify
) -> None:
    """The forger moves records 4..8 on by one and writes, at 4, a record linked to record 3
    as a writer would have linked it."""
    log = Log(store, plain)
    written = log.write(8)
    for seq in range(8, 3, -1):
        log.put(seq + 1, written[seq - 1])
    forged = Record(
        seq=4,
        prev=digest(written[2]),
        time="2026-03-01T10:00:00.000000Z",
        writer="operator-0",
        subject=JOBS[0],
        event="InputsVerified",
        key="inputs",
        details={
            "datasets": {"training": {"uri": "s3://eu-data/x", "sha256": "sha256:" + "0" * 64}}
        },
    )
    log.put(4, encode(forged))
    status, lines = verify(log.uri)
    assert (status, lines[5:]) == (
        1,
        [
            "record 4: inserted; the records after it moved on (positions 5..9 hold records 4..8)",
            "1 finding(s)",
        ],
    )


def test_an_unreadable_store_is_said_plainly(store: S3Credentials, verify: Verify) -> None:
    status, lines = verify(f"s3://audit-none-{uuid.uuid4().hex[:8]}/cluster")
    assert status == 2
    assert len(lines) == 1
    assert lines[0].startswith("sovai audit: cannot read the audit log s3://audit-none-")
    assert "NoSuchBucket" in lines[0]


# -- a log under Object Lock --------------------------------------------------------------------


def versions(log: Log, seq: int) -> list[dict[str, Any]]:
    listed = log.s3.list_object_versions(Bucket=log.location.bucket, Prefix=log.key(seq))
    return list(listed.get("Versions", []))


def test_an_overwritten_locked_record_keeps_its_original(
    store: S3Credentials, locked: str, verify: Verify
) -> None:
    log = Log(store, locked)
    written = log.write(5)
    log.put(3, edit(written[2]))  # the store takes it, as a new version
    status, lines = verify(log.uri)
    assert status == 1
    assert lines[3] == "object lock: COMPLIANCE 1 days"
    assert lines[5:] == [
        f"record 3: rewritten: the store keeps 2 versions; the original is {digest(written[2])}",
        f"record 3: modified: record 4 was chained to {digest(written[2])}, record 3 now has "
        f"{digest(edit(written[2]))}",
        "2 finding(s)",
    ]
    [original] = [v for v in versions(log, 3) if not v["IsLatest"]]
    kept = log.s3.get_object(
        Bucket=log.location.bucket, Key=log.key(3), VersionId=original["VersionId"]
    )
    assert kept["Body"].read() == written[2]


def test_a_locked_record_cannot_be_deleted_and_a_delete_marker_is_named(
    store: S3Credentials, locked: str, verify: Verify
) -> None:
    log = Log(store, locked)
    written = log.write(4)
    [version] = versions(log, 4)
    with pytest.raises(ClientError) as refused:
        log.delete(4, version["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert verify(log.uri)[0] == 0
    # A plain delete only hides it, even the last record, which nothing follows.
    log.delete(4)
    status, lines = verify(log.uri)
    assert (status, lines[5:]) == (
        1,
        [
            "record 4: deleted (a delete marker hides it; the store still keeps the original)",
            "1 finding(s)",
        ],
    )
    assert (
        log.s3.get_object(
            Bucket=log.location.bucket, Key=log.key(4), VersionId=version["VersionId"]
        )["Body"].read()
        == written[3]
    )


# -- writers ------------------------------------------------------------------------------------


class Refusals:
    """A boto3 client that counts the conditional PUTs the store refused."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def put_object(self, **request: Any) -> Any:
        try:
            return self.client.put_object(**request)
        except ClientError as error:
            if error.response["Error"]["Code"] == "PreconditionFailed":
                self.refused += 1
            raise


def test_two_writers_make_one_chain_with_each_fact_once(
    store: S3Credentials, plain: str, verify: Verify
) -> None:
    """Two operators (a leader change) append at once, each with its own client, and derive
    the same facts (level-based passes): they race for the same position every round, and the
    chain holds every fact once."""
    log = Log(store, plain)
    rounds = 12
    each_round = threading.Barrier(2, timeout=30)
    clients = {name: Refusals(admin_client(store)) for name in ("op-a", "op-b")}
    errors: list[BaseException] = []

    def write(name: str) -> None:
        writer = AuditLog(clients[name], log.location, writer=name)
        try:
            for i in range(rounds):
                each_round.wait()
                shared = Fact(JOBS[0], "PhaseChanged", f"phase/{i}", {"phase": f"step {i}"})
                own = Fact(JOBS[1], "PodPlaced", f"{name}/{i}", {"pod": f"{name}-{i}"})
                writer.append([shared, own])
        except BaseException as error:
            errors.append(error)
            each_round.abort()

    threads = [threading.Thread(target=write, args=(name,)) for name in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert sum(client.refused for client in clients.values()) >= 1, "the writers never raced"
    chain = log.chain()
    assert chain.findings == []
    records = [record for record, _ in chain.records.values()]
    keys = Counter((record.subject.uid, record.key) for record in records)
    assert len(records) == 3 * rounds  # each shared fact once, each writer's own facts
    assert set(keys.values()) == {1}
    assert {record.writer for record in records} == {"op-a", "op-b"}
    assert verify(log.uri)[0] == 0


DOOMED = """
import sys
from sovereign_operator.audit.log import AuditLog, Location, s3_client
from sovereign_operator.audit.records import Fact, Subject

uri, endpoint, region = sys.argv[1:]
log = AuditLog(s3_client(endpoint, region), Location.parse(uri), writer="doomed")
job = Subject("FineTuneJob", "team-a", "doomed", "uid-doomed")
for i in range(100000):
    log.append([Fact(job, "PhaseChanged", f"phase/{i}", {"phase": f"step {i}"})])
    print(i + 1, flush=True)
"""


@pytest.fixture
def doomed(store: S3Credentials, plain: str, env: dict[str, str]) -> Iterator[Log]:
    """A log whose writer was SIGKILLed while appending in a loop."""
    log = Log(store, plain)
    argv = [sys.executable, "-c", DOOMED, log.uri, store.endpoint, store.region]
    writer = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None
        for line in writer.stdout:
            if int(line) >= KILL_AFTER:
                break
        writer.send_signal(signal.SIGKILL)  # most likely in the middle of the next request
        writer.wait(timeout=30)
        assert writer.returncode == -signal.SIGKILL, writer.stderr.read() if writer.stderr else ""
        yield log
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()


def test_a_writer_killed_while_appending_leaves_a_chain_another_continues(
    doomed: Log, verify: Verify
) -> None:
    left = doomed.chain()
    assert left.findings == []
    assert left.head.seq >= KILL_AFTER
    assert verify(doomed.uri)[0] == 0

    successor = doomed.writer("successor")
    job = Subject("FineTuneJob", "team-a", "doomed", "uid-doomed")
    # What the killed writer recorded is not recorded again; what it had not, is.
    again = [
        Fact(job, "PhaseChanged", f"phase/{i}", {"phase": f"step {i}"})
        for i in range(left.head.seq + 2)
    ]
    heads = successor.append(again)
    chain = doomed.chain()
    assert chain.findings == []
    assert heads["uid-doomed"] == chain.head
    assert chain.head.seq == left.head.seq + 2
    assert [record.key for _, record in chain.about("uid-doomed")] == [f.key for f in again]
    assert {record.writer for record, _ in chain.records.values()} == {"doomed", "successor"}
    assert verify(doomed.uri)[0] == 0


# -- claims, and the story ----------------------------------------------------------------------


def test_a_claim_with_the_wrong_digest_is_named(store: S3Credentials, plain: str) -> None:
    log = Log(store, plain)
    written = log.write(4)
    chain = log.chain()
    true = Claim("FineTuneJob team-a/faq status.audit.head", "uid-faq", Head(3, digest(written[2])))
    false = Claim("FineTuneJob team-a/faq status.audit.head", "uid-faq", Head(3, digest(b"x")))
    assert check_claims(chain, [true]) == []
    assert [str(finding) for finding in check_claims(chain, [false])] == [
        f"record 3: FineTuneJob team-a/faq status.audit.head says its digest is {digest(b'x')}, "
        f"the record has {digest(written[2])}"
    ]


def test_verify_checks_the_heads_a_jobs_status_claims(
    crds: LocalCluster,
    namespace: str,
    store: S3Credentials,
    plain: str,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The job's status names its records in this log; verify lists every job in the cluster
    (all namespaces) and checks them. No operator runs: the status is written here."""
    setup_namespace(crds, namespace)
    crds.apply(finetunejob("claimed", namespace))
    uid = str((ftj(crds, namespace, "claimed") or {})["metadata"]["uid"])
    log = Log(store, plain)
    job = Subject("FineTuneJob", namespace, "claimed", uid)
    log.writer("operator-0").append(
        [
            Fact(job, "PolicyBound", "policy", {"policy": f"pol-{namespace}"}),
            Fact(job, "Admitted", "admitted/1", {"generation": 1}),
            Fact(JOBS[0], "PhaseChanged", "phase/Pending", {"phase": "Pending"}),
        ]
    )
    admission = f"2:{digest(log.get(2))}"

    def claim(head: str) -> tuple[int, list[str]]:
        trail = {"log": log.uri, "head": head, "admission": admission}
        crds.kubectl(
            "patch",
            "finetunejob",
            "claimed",
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"audit": trail}}),
        )
        capsys.readouterr()
        argv = ["audit", "verify", "--log", log.uri, "--kubeconfig", str(crds.kubeconfig)]
        status = main(argv)
        captured = capsys.readouterr()
        return status, (captured.out + captured.err).splitlines()

    status, lines = claim(admission)
    assert status == 0, lines
    assert lines[4].startswith("claims: 2 checked")
    wrong = "sha256:" + "0" * 64
    status, lines = claim(f"2:{wrong}")
    assert (status, lines[5:]) == (
        1,
        [
            f"record 2: FineTuneJob {namespace}/claimed status.audit.head says its digest is "
            f"{wrong}, the record has {admission.removeprefix('2:')}",
            "1 finding(s)",
        ],
    )
    status, lines = claim(f"3:{digest(log.get(3))}")
    assert (status, lines[5:]) == (
        1,
        [
            f"record 3: FineTuneJob {namespace}/claimed status.audit.head names it, but it is "
            "about FineTuneJob team-a/faq",
            "1 finding(s)",
        ],
    )
    crds.kubectl("delete", "sovereigntypolicy", f"pol-{namespace}", "--wait=false", check=False)


def test_show_tells_a_jobs_story_from_the_store(
    store: S3Credentials, plain: str, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    log = Log(store, plain)
    log.write(4)
    capsys.readouterr()
    assert main(["audit", "show", "ftj/summaries", "-n", "team-a", "--log", log.uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "FineTuneJob team-a/summaries (uid uid-summaries)",
        f"audit log {log.uri}: 4 records, chain intact",
    ]
    assert [line.split()[0] for line in lines[lines.index("Records") + 1 :]] == ["2", "4"]
    assert main(["audit", "show", "md/summaries", "-n", "team-a", "--log", log.uri]) == 1
    assert capsys.readouterr().err == (
        f"sovai audit: the log {log.uri} has no record about ModelDeployment team-a/summaries\n"
    )
