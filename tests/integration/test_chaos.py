"""Chaos (issue 21): the operator SIGKILLed every 1.5-3 s through 100 FineTuneJob and 20
ModelDeployment lifecycles, kube-apiserver and etcd each restarted once mid-run, on the real
control plane with KubeRay; then what the run left behind is counted.

A lifecycle: the objects are created (retried while the API server is down or its admission
policy is not yet synced, as docs/api.md tells a client to), each must reach one child of each
kind and, for a job, the phase its RayJob implies; then they are deleted and must be gone with
their children. Counted: duplicate children (two of a kind for one owner), orphaned children
(an owner that no longer exists), jobs whose phase never came to agree with their RayJob,
duplicate transition Events, and the time each wave took to settle. SOVAI_CHAOS_WAVES sets the
number of waves (10 jobs and 2 deployments each; default 10). Figures: docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sovereign_operator.devcluster import LocalCluster

from .operator_process import (
    MODEL_SOURCES,
    OperatorProcess,
    finetunejob,
    modeldeployment,
    setup_namespace,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAVES = int(os.environ.get("SOVAI_CHAOS_WAVES", "10"))
JOBS_PER_WAVE = 10
DEPLOYMENTS_PER_WAVE = 2
POLL_SECONDS = 1.0
OWNER_KINDS = ("FineTuneJob", "ModelDeployment")
CHILD_KINDS = "rayjobs.ray.io,deployments,services,poddisruptionbudgets,networkpolicies"
SETTLE_TIMEOUT = 240.0


class Chaos(threading.Thread):
    """Kills the operator at random intervals and restarts it at once; restarts a control-plane
    component when asked (between two kills, with the operator left running through it)."""

    def __init__(self, operator: OperatorProcess, cluster: LocalCluster, seed: int) -> None:
        super().__init__(name="chaos", daemon=True)
        self.operator = operator
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.requests: list[str] = []
        self.kills = 0
        self.restart_seconds: list[float] = []  # from SIGKILL to a live operator again
        self.component_seconds: dict[str, float] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.halt.wait(self.rng.uniform(1.5, 3.0)):
                if self.requests:
                    name = self.requests.pop(0)
                    self.component_seconds[name] = self.cluster.restart(name)
                    continue
                began = time.monotonic()
                self.operator.kill()
                self.operator.start(timeout=120)
                self.kills += 1
                self.restart_seconds.append(time.monotonic() - began)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=180)
        if self.error is not None:
            raise AssertionError(f"the chaos thread failed: {self.error!r}") from self.error


def kubectl_retrying(cluster: LocalCluster, *args: str, stdin: str | None = None) -> str:
    """kubectl, again until it succeeds: the API server may be restarting, or refusing creates
    until its admission policy's informer has synced (about 30 s after a restart)."""
    deadline = time.monotonic() + 180
    while True:
        result = cluster.kubectl(*args, stdin=stdin, check=False, timeout=30)
        if result.returncode == 0:
            return str(result.stdout)
        if time.monotonic() > deadline:
            raise AssertionError(f"kubectl {' '.join(args)} kept failing: {result.stderr}")
        time.sleep(1)


def listing(cluster: LocalCluster, namespace: str, kinds: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        kubectl_retrying(cluster, "get", kinds, "-n", namespace, "-o", "json")
    )["items"]
    return items


def controller_uid(obj: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, uid) of the FineTuneJob or ModelDeployment that owns ``obj``, if one does."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("kind") in OWNER_KINDS:
            return ref["kind"], ref["uid"]
    return None


def implied_phase(rayjob: dict[str, Any]) -> str:
    """The FineTuneJob phase a RayJob's deployment status implies (kwok's pods never finish,
    so only these two occur here)."""
    deployment = (rayjob.get("status") or {}).get("jobDeploymentStatus") or ""
    return "Running" if deployment == "Running" else "Queued"


class Tally:
    def __init__(self) -> None:
        self.duplicates: set[str] = set()
        self.settle_seconds: list[float] = []
        self.delete_seconds: list[float] = []
        self.mismatched_last: list[str] = []

    def settled(self, cluster: LocalCluster, namespace: str, jobs: int, deployments: int) -> bool:
        owners = listing(cluster, namespace, "finetunejobs,modeldeployments")
        children = listing(cluster, namespace, CHILD_KINDS)
        per_owner: dict[str, Counter[str]] = {}
        rayjob_of: dict[str, dict[str, Any]] = {}
        for child in children:
            owner = controller_uid(child)
            if owner is None:
                continue
            per_owner.setdefault(owner[1], Counter())[child["kind"]] += 1
            if child["kind"] == "RayJob":
                rayjob_of[owner[1]] = child
        for uid, kinds in per_owner.items():
            for kind, count in kinds.items():
                if count > 1:
                    self.duplicates.add(f"{count} {kind}s for owner {uid}")
        mismatched = []
        ftjs = [o for o in owners if o["kind"] == "FineTuneJob"]
        mdeps = [o for o in owners if o["kind"] == "ModelDeployment"]
        for job in ftjs:
            uid, name = job["metadata"]["uid"], job["metadata"]["name"]
            rayjob = rayjob_of.get(uid)
            phase = (job.get("status") or {}).get("phase")
            if rayjob is None or per_owner[uid]["NetworkPolicy"] != 1:
                mismatched.append(f"{name}: children {dict(per_owner.get(uid, {}))}")
            elif phase != implied_phase(rayjob):
                mismatched.append(f"{name}: phase {phase}, RayJob implies {implied_phase(rayjob)}")
        for mdep in mdeps:
            uid, name = mdep["metadata"]["uid"], mdep["metadata"]["name"]
            if per_owner.get(uid, Counter())["Deployment"] != 1 or not mdep.get("status"):
                mismatched.append(f"{name}: children {dict(per_owner.get(uid, {}))}")
        self.mismatched_last = mismatched
        return len(ftjs) == jobs and len(mdeps) == deployments and not mismatched


def gone(cluster: LocalCluster, namespace: str) -> bool:
    """No FineTuneJob or ModelDeployment left, and no child of one."""
    if listing(cluster, namespace, "finetunejobs,modeldeployments"):
        return False
    return not [c for c in listing(cluster, namespace, CHILD_KINDS) if controller_uid(c)]


def duplicate_transition_events(cluster: LocalCluster, namespace: str) -> list[str]:
    """Transition Events ("Queued -> Running: ...") posted more than once for one object."""
    seen: Counter[tuple[str, str]] = Counter()
    for event in listing(cluster, namespace, "events"):
        involved = event.get("involvedObject") or {}
        message = event.get("message") or ""
        if involved.get("kind") in OWNER_KINDS and " -> " in message.split(":", 1)[0]:
            transition = message.split(":", 1)[0]
            seen[(involved.get("uid", ""), transition)] += int(event.get("count") or 1)
    return [f"{uid} {transition}: {n} times" for (uid, transition), n in seen.items() if n > 1]


def test_operator_and_control_plane_restarts_leave_nothing_wrong_behind(
    crds: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    setup_namespace(crds, namespace, allowedModelSources=MODEL_SOURCES)
    tally = Tally()
    started = time.monotonic()
    with OperatorProcess(crds, tmp_path, namespaces=[namespace]) as operator:
        chaos = Chaos(operator, crds, seed=21)
        chaos.start()
        try:
            for wave in range(WAVES):
                if wave == WAVES // 3:
                    chaos.requests.append("kube-apiserver")
                if wave == 2 * WAVES // 3:
                    chaos.requests.append("etcd")
                jobs = [f"chaos-{wave}-job-{i}" for i in range(JOBS_PER_WAVE)]
                deployments = [f"chaos-{wave}-serving-{i}" for i in range(DEPLOYMENTS_PER_WAVE)]
                manifests = [finetunejob(name, namespace) for name in jobs]
                manifests += [modeldeployment(name, namespace) for name in deployments]
                began = time.monotonic()
                kubectl_retrying(
                    crds,
                    "apply",
                    "-f",
                    "-",
                    stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
                )
                wait_for(
                    lambda: tally.settled(crds, namespace, JOBS_PER_WAVE, DEPLOYMENTS_PER_WAVE),
                    SETTLE_TIMEOUT,
                    f"wave {wave} to settle",
                    interval=POLL_SECONDS,
                    on_timeout=lambda: "\n".join(tally.mismatched_last) + operator.log_tail(),
                )
                tally.settle_seconds.append(time.monotonic() - began)
                began = time.monotonic()
                kubectl_retrying(
                    crds,
                    "delete",
                    "finetunejobs,modeldeployments",
                    "--all",
                    "-n",
                    namespace,
                    "--wait=false",
                )
                wait_for(
                    lambda: gone(crds, namespace),
                    SETTLE_TIMEOUT,
                    f"wave {wave}'s objects and children to be gone",
                    interval=POLL_SECONDS,
                    on_timeout=operator.log_tail,
                )
                tally.delete_seconds.append(time.monotonic() - began)
        finally:
            chaos.stop()
        duplicate_events = duplicate_transition_events(crds, namespace)
        orphans = [
            f"{c['kind']} {c['metadata']['name']}"
            for c in listing(crds, namespace, CHILD_KINDS)
            if controller_uid(c)
        ]
    figures = {
        "lifecycles": f"{WAVES * JOBS_PER_WAVE} jobs, {WAVES * DEPLOYMENTS_PER_WAVE} deployments",
        "operator kills": chaos.kills,
        "kill to live operator, s (median / max)": (
            f"{statistics.median(chaos.restart_seconds or [0]):.1f} / "
            f"{max(chaos.restart_seconds or [0]):.1f}"
        ),
        "component restarts, s": {k: round(v, 1) for k, v in chaos.component_seconds.items()},
        "wave settle, s (median / max)": (
            f"{statistics.median(tally.settle_seconds):.1f} / {max(tally.settle_seconds):.1f}"
        ),
        "wave delete, s (median / max)": (
            f"{statistics.median(tally.delete_seconds):.1f} / {max(tally.delete_seconds):.1f}"
        ),
        "duplicate children": len(tally.duplicates),
        "orphaned children": len(orphans),
        "duplicate transition Events": len(duplicate_events),
        "wall, s": round(time.monotonic() - started),
    }
    print("\nchaos figures: " + json.dumps(figures))
    assert chaos.kills >= WAVES, f"the operator was killed only {chaos.kills} times"
    assert set(chaos.component_seconds) == {"kube-apiserver", "etcd"}, chaos.component_seconds
    assert not tally.duplicates, sorted(tally.duplicates)
    assert not orphans, orphans
    assert not duplicate_events, duplicate_events
