"""The operator's audit log on the real S3 store (SeaweedFS, with Object Lock): a job's story
recorded once across restarts, its status and its trainer config naming the chain's records,
a policy changed under it, `sovai audit verify` against the cluster, and a job held back while
the log cannot be written."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sovereign_operator.audit.log import Location
from sovereign_operator.audit.records import parse_head
from sovereign_operator.audit.verify import Chain, check_chain, read_store
from sovereign_operator.builders.jobconfig import job_config_of
from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.s3store import admin_client, make_locked_bucket

from .operator_process import (
    EU_REGIONS,
    OperatorProcess,
    events,
    finetunejob,
    ftj,
    get_json,
    policy_for,
    rayjobs,
    setup_namespace,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


class Audited:
    """An operator keeping its audit log at s3://<bucket>/cluster/ in the cluster's store."""

    def __init__(self, cluster: LocalCluster, namespace: str, workdir: Path, bucket: str) -> None:
        store = cluster.s3_credentials
        assert store is not None, "the integration cluster runs its S3 store"
        self.store = store
        self.uri = f"s3://{bucket}/cluster"
        self.env = {
            "SOVAI_AUDIT_URI": self.uri,
            "SOVAI_AUDIT_ENDPOINT": store.endpoint,
            "SOVAI_AUDIT_REGION": store.region,
            "AWS_ACCESS_KEY_ID": store.access_key,
            "AWS_SECRET_ACCESS_KEY": store.secret_key,
        }
        self.operator = OperatorProcess(cluster, workdir, namespaces=[namespace], env=self.env)

    def chain(self) -> Chain:
        client = admin_client(self.store)
        stored, stray = read_store(client, Location.parse(self.uri))
        return check_chain(stored, stray)

    def events_about(self, uid: str) -> list[str]:
        return [record.event for _, record in self.chain().about(uid)]

    def verify(self, cluster: LocalCluster) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "sovereign_operator.cli", "audit", "verify"]
        argv += ["--log", self.uri, "--endpoint", self.store.endpoint]
        argv += ["--region", self.store.region, "--kubeconfig", str(cluster.kubeconfig)]
        env = {**self.operator.env, "PYTHONPATH": str(REPO / "operator")}
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def audited(crds: LocalCluster, namespace: str, tmp_path: Path) -> Iterator[Audited]:
    setup_namespace(crds, namespace)
    store = crds.s3_credentials
    assert store is not None
    bucket = f"audit-{uuid.uuid4().hex[:10]}"
    make_locked_bucket(store, bucket)
    audited = Audited(crds, namespace, tmp_path, bucket)
    with audited.operator:
        yield audited
    crds.kubectl("delete", "sovereigntypolicy", f"pol-{namespace}", "--wait=false", check=False)


def audit_status(obj: dict[str, Any] | None) -> dict[str, Any]:
    return dict(((obj or {}).get("status") or {}).get("audit") or {})


def test_a_jobs_story_is_recorded_once_and_verifies_against_the_cluster(
    crds: LocalCluster, namespace: str, audited: Audited
) -> None:
    crds.apply(finetunejob("story", namespace))
    obj = wait_for(
        lambda: (o := ftj(crds, namespace, "story")) and audit_status(o).get("head") and o,
        90,
        "the job's audit head",
        on_timeout=audited.operator.log_tail,
    )
    uid = obj["metadata"]["uid"]
    wait_for(lambda: "ChildCreated" in audited.events_about(uid), 60, "the RayJob's record")
    chain = audited.chain()
    assert chain.ok, chain.findings
    story = chain.about(uid)
    events_in_order = [record.event for _, record in story]
    assert events_in_order[:2] == ["PolicyBound", "Admitted"]
    admitted = next(r for _, r in story if r.event == "Admitted")
    assert admitted.details["datasets"] == {"training": "s3://eu-data/faq/train.jsonl"}
    [rayjob] = rayjobs(crds, namespace)
    child = next(r for _, r in story if r.event == "ChildCreated")
    assert child.details == {
        "kind": "RayJob",
        "name": rayjob["metadata"]["name"],
        "uid": rayjob["metadata"]["uid"],
    }
    # The status, the trainer's config and the chain name the same records.
    trail = audit_status(ftj(crds, namespace, "story"))
    assert trail["log"] == audited.uri + "/"
    admission = parse_head(trail["admission"])
    assert chain.records[admission.seq][1] == admission.digest
    assert chain.records[admission.seq][0].event == "Admitted"
    live_rayjob = get_json(crds, "rayjob", rayjob["metadata"]["name"], "-n", namespace)
    job_json = json.loads(job_config_of(live_rayjob) or "{}")
    assert job_json["audit"]["chainHead"] == trail["admission"]

    # A policy changed under the job, seen after a restart: recorded once, as a change.
    audited.operator.stop()
    changed = policy_for(namespace, allowedRegions=[*EU_REGIONS, "eu-north-sto"])
    crds.apply(changed)
    audited.operator.start()
    wait_for(lambda: "PolicyChanged" in audited.events_about(uid), 60, "the policy change")
    chain = audited.chain()
    keys = [record.key for _, record in chain.about(uid)]
    assert len(keys) == len(set(keys)), keys  # nothing recorded twice across the restart
    change = next(r for _, r in chain.about(uid) if r.event == "PolicyChanged")
    assert change.details["previousDigest"] == story[0][1].details["policyDigest"]
    assert "eu-north-sto" in change.details["regions"]

    wait_for(
        lambda: (
            audit_status(ftj(crds, namespace, "story")).get("head") == str(chain.head)
            or audited.chain().head.seq > chain.head.seq
        ),
        30,
        "the status to name the last record",
    )
    verified = audited.verify(crds)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # A status head that the chain does not hold is named by its position.
    audited.operator.stop()
    head = parse_head(audit_status(ftj(crds, namespace, "story"))["head"])
    forged = f"{head.seq}:sha256:{'0' * 64}"
    crds.kubectl(
        "patch",
        "finetunejob",
        "story",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"audit": {"head": forged}}}),
    )
    verified = audited.verify(crds)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert f"record {head.seq}:" in verified.stdout

    # Deleting the job is recorded before its children go.
    audited.operator.start()
    crds.kubectl("delete", "finetunejob", "story", "-n", namespace, "--wait=false")
    wait_for(lambda: "Deleted" in audited.events_about(uid), 60, "the deletion's record")
    wait_for(lambda: ftj(crds, namespace, "story") is None, 60, "the job to be gone")
    assert audited.chain().ok


def test_a_job_waits_while_its_audit_log_cannot_be_written(
    crds: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    setup_namespace(crds, namespace)
    store = crds.s3_credentials
    assert store is not None
    bucket = f"audit-{uuid.uuid4().hex[:10]}"  # not made yet
    audited = Audited(crds, namespace, tmp_path, bucket)
    with audited.operator:
        crds.apply(finetunejob("held", namespace))
        wait_for(
            lambda: any(
                e["reason"] == "AuditLogUnavailable" for e in events(crds, namespace, "held")
            ),
            60,
            "the AuditLogUnavailable Event",
            on_timeout=audited.operator.log_tail,
        )
        assert rayjobs(crds, namespace) == []  # nothing made that is not recorded
        assert not audit_status(ftj(crds, namespace, "held"))
        make_locked_bucket(store, bucket)
        obj = wait_for(
            lambda: (o := ftj(crds, namespace, "held")) and audit_status(o).get("head") and o,
            90,
            "the job to go on once the log can be written",
            on_timeout=audited.operator.log_tail,
        )
        wait_for(lambda: rayjobs(crds, namespace), 30, "the RayJob")
        events_in_order = audited.events_about(obj["metadata"]["uid"])
        assert events_in_order[:2] == ["PolicyBound", "Admitted"]
    crds.kubectl("delete", "sovereigntypolicy", f"pol-{namespace}", "--wait=false", check=False)
