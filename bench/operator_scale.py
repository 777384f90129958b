"""How the operator keeps up with many FineTuneJobs, on a local control plane.

    python bench/operator_scale.py                 # 1000 at once, then 20/s for 30 s
    python bench/operator_scale.py -n 5000 --rate 0  # the burst only, for memory at scale

Starts a LocalCluster (etcd, kube-apiserver, controller-manager, scheduler, kwok) with the
project's CRDs and admission policies and KubeRay's CRDs, but without the KubeRay operator:
what is measured is this operator, not KubeRay turning RayJobs into pods. The operator runs as
`python -m sovereign_operator`, as in production. Prints a table:

- burst: N FineTuneJobs created at once (8 client threads); time until every RayJob exists and
  every FineTuneJob is Queued; p50/p99 of create-returned -> RayJob ADDED (watch event);
- steady: creates at a fixed rate; the same latencies;
- deployments: N ModelDeployments (default 500) once the jobs are in; when every one has a
  status and nothing changes any more, the API requests the operator makes per unchanged
  ModelDeployment per follow-up sweep, from apiserver_request_total over three sweeps (the
  bench's own watches are WATCH requests, left out);
- the operator's peak RSS (VmHWM) and how many FineTuneJobs and ModelDeployments it was
  following then;
- with --floor, once the operator has stopped: the creates again, then the same number of jobs
  with the operator's writes for one job made by the bench's own client, one write more at
  each step (NetworkPolicy, RayJob, status, Event): the least those writes take here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import requests
import urllib3
from kubernetes import client as k8s
from kubernetes import config as kube_config
from kubernetes import watch

from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.processes import free_port

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "sovereign-ai.eu", "v1alpha1", "finetunejobs"
IMAGE = "registry.eu-west-par.example.eu/sovereign-ai/runtime:0.1.0"


@dataclass
class Timeline:
    """When each object was created (client side) and when its children were seen."""

    created: dict[str, float] = field(default_factory=dict)
    rayjob_seen: dict[str, float] = field(default_factory=dict)
    queued_seen: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def latencies(self, names: list[str]) -> list[float]:
        return sorted(self.rayjob_seen[n] - self.created[n] for n in names if n in self.rayjob_seen)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return sorted(values)[index]


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    """VmHWM: the process's peak resident set, kept by the kernel; VmRSS: the current one."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (utime and stime of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def cpu_rows(
    phase: str, before: dict[str, float], after: dict[str, float]
) -> list[tuple[str, str]]:
    """CPU seconds each process spent in a phase: who the 2 cores worked for."""
    spent = {name: after[name] - before[name] for name in before}
    return [
        (f"{phase}: CPU s, {name}", f"{seconds:.1f}")
        for name, seconds in sorted(spent.items(), key=lambda item: -item[1])
    ]


def request_counts(cluster: LocalCluster) -> dict[tuple[str, str], float]:
    """apiserver_request_total summed by (verb, resource[/subresource])."""
    counts: dict[tuple[str, str], float] = {}
    for line in cluster.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(
            part.split("=", 1) for part in line[line.index("{") + 1 : line.rindex("}")].split(",")
        )
        resource = labels.get("resource", '""').strip('"')
        sub = labels.get("subresource", '""').strip('"')
        key = (labels["verb"].strip('"'), f"{resource}/{sub}" if sub else resource)
        counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def request_rows(
    phase: str, jobs: int, before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> list[tuple[str, str]]:
    """Mutating requests per FineTuneJob in a phase (reads and watches are left out)."""
    rows = []
    for key in sorted(after):
        verb, resource = key
        delta = after[key] - before.get(key, 0.0)
        if verb in ("POST", "PUT", "PATCH", "APPLY", "DELETE") and delta >= jobs / 2:
            rows.append((f"{phase}: {verb} {resource} per job", f"{delta / jobs:.2f}"))
    return rows


def policy(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SovereigntyPolicy",
        "metadata": {"name": f"bench-{namespace}"},
        "spec": {
            "allowedRegions": ["eu-west-par", "eu-central-fra"],
            "storageEndpoints": [
                {"name": "scw-par", "url": "https://s3.fr-par.scw.cloud", "region": "eu-west-par"}
            ],
            "allowedStorage": [{"scheme": "s3", "host": "eu-*", "endpoint": "scw-par"}],
            "allowedModelSources": [{"scheme": "hf", "host": "sovereign-ai-test"}],
            "allowedRegistries": ["registry.eu-west-par.example.eu"],
            "namespaceSelector": {"matchLabels": {"sovereign-ai.eu/bench": namespace}},
        },
    }


def finetunejob(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "baseModel": {"uri": "hf://sovereign-ai-test/tiny-llama"},
            "dataset": {"trainingUri": "s3://eu-data/faq/train.jsonl"},
            "placement": {"policyRef": f"bench-{namespace}"},
        },
    }


def modeldeployment(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": "hf://sovereign-ai-test/tiny-llama"},
            "runtime": "transformers",
            "resources": {"gpusPerReplica": 0, "cpu": "100m", "memory": "256Mi"},
            "placement": {"policyRef": f"bench-{namespace}"},
        },
    }


def deployments_settled(namespace: str, count: int, quiet: float, timeout: float) -> bool:
    """Every ModelDeployment has a phase, and none changed for ``quiet`` seconds."""
    api = k8s.CustomObjectsApi()
    deadline = time.monotonic() + timeout
    last: dict[str, str] = {}
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        listed = api.list_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments")
        objects = cast(list[dict[str, Any]], cast(dict[str, Any], listed)["items"])
        now = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in objects}
        phased = len([o for o in objects if (o.get("status") or {}).get("phase")])
        if now != last:
            last, still_since = now, time.monotonic()
        elif phased == count and time.monotonic() - still_since >= quiet:
            return True
        time.sleep(2)
    return False


def requests_made(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> float:
    """Every request but the long-running WATCHes between two request_counts."""
    return sum(
        after[key] - before.get(key, 0.0) for key in after if key[0] not in ("WATCH", "CONNECT")
    )


def _follow(list_fn: Any, args: tuple[str, ...], on_object: Any, stop: threading.Event) -> None:
    """List once, then watch from that resourceVersion, resuming where the last event left
    off; a fresh watch without a resourceVersion would replay every object each time."""
    version = ""
    while not stop.is_set():
        try:
            if not version:
                listed = list_fn(*args)
                for obj in listed["items"]:
                    on_object(obj)
                version = listed["metadata"]["resourceVersion"]
            for event in watch.Watch().stream(
                list_fn,
                *args,
                resource_version=version,
                timeout_seconds=30,
                allow_watch_bookmarks=True,
            ):
                obj = event["object"]
                version = obj["metadata"]["resourceVersion"]
                if event["type"] != "BOOKMARK":
                    on_object(obj)
                if stop.is_set():
                    return
        except k8s.ApiException as error:
            if error.status == 410:  # too old: list again
                version = ""
            else:  # a loaded API server answers 504 to a watch now and then
                time.sleep(0.2)
        except urllib3.exceptions.HTTPError:  # a watch cut short: resume from `version`
            time.sleep(0.2)


def watch_children(
    namespace: str, timeline: Timeline, stop: threading.Event
) -> list[threading.Thread]:
    """Record the first time each RayJob appears and each FineTuneJob reports Queued."""
    api = k8s.CustomObjectsApi()

    def rayjob_seen(obj: dict[str, Any]) -> None:
        with timeline.lock:
            timeline.rayjob_seen.setdefault(obj["metadata"]["name"], time.monotonic())

    def queued_seen(obj: dict[str, Any]) -> None:
        if (obj.get("status") or {}).get("phase") in ("Queued", "Running"):
            with timeline.lock:
                timeline.queued_seen.setdefault(obj["metadata"]["name"], time.monotonic())

    threads = [
        threading.Thread(
            target=_follow,
            args=(
                api.list_namespaced_custom_object,
                ("ray.io", "v1", namespace, "rayjobs"),
                rayjob_seen,
                stop,
            ),
            daemon=True,
        ),
        threading.Thread(
            target=_follow,
            args=(
                api.list_namespaced_custom_object,
                (GROUP, VERSION, namespace, PLURAL),
                queued_seen,
                stop,
            ),
            daemon=True,
        ),
    ]
    for thread in threads:
        thread.start()
    return threads


def create(namespace: str, name: str, timeline: Timeline) -> None:
    api = k8s.CustomObjectsApi()
    for attempt in range(10):
        try:
            api.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, finetunejob(name, namespace)
            )
            break
        except k8s.ApiException as error:
            if error.status not in (429, 500, 503, 504) or attempt == 9:
                raise
            time.sleep(0.2 * (attempt + 1))
    with timeline.lock:
        timeline.created[name] = time.monotonic()


# What a job's pass leaves behind, copied from one the operator handled, to replay without it.
Children = dict[str, Any]


def children_of(namespace: str, name: str) -> Children:
    """The writes the operator made for one job: its NetworkPolicy, RayJob, status and Events,
    as the API server holds them (server-set fields dropped), keyed by what they are."""
    custom, networking, core = k8s.CustomObjectsApi(), k8s.NetworkingV1Api(), k8s.CoreV1Api()
    job = cast(
        dict[str, Any], custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    )
    uid = job["metadata"]["uid"]
    selector = f"sovereign-ai.eu/job-uid={uid}"
    rayjobs = cast(
        dict[str, Any],
        custom.list_namespaced_custom_object(
            "ray.io", "v1", namespace, "rayjobs", label_selector=selector
        ),
    )["items"]
    policies = networking.list_namespaced_network_policy(namespace, label_selector=selector)
    events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.uid={uid}")
    client = k8s.ApiClient()
    return {
        "name": name,
        "uid": uid,
        "rayjobs": [_writable(item) for item in rayjobs],
        "networkpolicies": [
            _writable(client.sanitize_for_serialization(item)) for item in policies.items
        ],
        "status": job.get("status") or {},
        "events": [_writable(client.sanitize_for_serialization(item)) for item in events.items],
    }


def _writable(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = {
        key: value
        for key, value in obj["metadata"].items()
        if key not in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation")
    }
    return {**{key: value for key, value in obj.items() if key != "status"}, "metadata": metadata}


# The operator's writes after the create, in its order, with what the table calls them.
FLOOR_STEPS = (
    ("networkpolicies", "NetworkPolicy"),
    ("rayjobs", "RayJob"),
    ("status", "status"),
    ("events", "Event"),
)


def replay(namespace: str, name: str, children: Children, steps: Collection[str]) -> None:
    """One job's writes made by the client instead of the operator: the job, then those of its
    NetworkPolicy, RayJob, status and Events that ``steps`` names, each renamed for it."""
    custom, networking, core = k8s.CustomObjectsApi(), k8s.NetworkingV1Api(), k8s.CoreV1Api()
    job = cast(
        dict[str, Any],
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, finetunejob(name, namespace)
        ),
    )

    def renamed(obj: Any) -> Any:
        text = json.dumps(obj).replace(children["uid"], job["metadata"]["uid"])
        moved: Any = json.loads(text.replace(children["name"], name))
        if isinstance(moved, dict) and "metadata" in moved:
            moved["metadata"]["namespace"] = namespace
        return moved

    for policy_ in children["networkpolicies"] if "networkpolicies" in steps else []:
        networking.create_namespaced_network_policy(namespace, renamed(policy_))
    for rayjob in children["rayjobs"] if "rayjobs" in steps else []:
        custom.create_namespaced_custom_object(
            "ray.io", "v1", namespace, "rayjobs", renamed(rayjob)
        )
    if "status" in steps:
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": renamed(children["status"])}
        )
    for event in children["events"] if "events" in steps else []:
        event = renamed(event)
        event["involvedObject"]["namespace"] = namespace
        core.create_namespaced_event(namespace, event)


def timed(threads: int, names: list[str], call: Any) -> float:
    """Seconds from the first to the last of ``call(name)`` over ``threads`` client threads."""
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(call, names))
    return time.monotonic() - started


def wait_all(timeline: Timeline, names: list[str], timeout: float) -> float | None:
    """Seconds from the first create until every RayJob exists and every job is Queued."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with timeline.lock:
            done = all(n in timeline.rayjob_seen and n in timeline.queued_seen for n in names)
            if done and names:
                start = min(timeline.created[n] for n in names)
                end = max(max(timeline.rayjob_seen[n], timeline.queued_seen[n]) for n in names)
                return end - start
        time.sleep(0.2)
    return None


def prepare(cluster: LocalCluster, namespace: str) -> None:
    cluster.kubectl("create", "namespace", namespace, check=False)  # idempotent on retry
    cluster.kubectl(
        "label", "namespace", namespace, f"sovereign-ai.eu/bench={namespace}", "--overwrite"
    )
    cluster.apply(policy(namespace))


def admission_ready(cluster: LocalCluster, namespace: str) -> bool:
    probe = finetunejob("probe", namespace)
    result = cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", stdin=json.dumps(probe), check=False
    )
    return result.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--burst", type=int, default=1000, help="jobs created at once")
    parser.add_argument(
        "--rate", type=float, default=20.0, help="steady creates per second (0: skip)"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of steady creates")
    parser.add_argument(
        "--deployments", type=int, default=500, help="ModelDeployments followed (0: skip)"
    )
    parser.add_argument("--threads", type=int, default=8, help="client threads of the burst")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="SOVAI_X=V",
        help="extra operator settings, e.g. SOVAI_MAX_WORKERS=8",
    )
    parser.add_argument(
        "--apiserver-profile",
        metavar="FILE",
        help="write a 20 s kube-apiserver CPU profile of the burst (go tool pprof FILE)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help=(
            "at the end, with the operator stopped: the burst's creates again, then the same "
            "number of jobs with every write the operator made for one of them made by the "
            "client itself (the least any operator making those writes can take)"
        ),
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="sovai-bench-"))
    flags = ["--profiling=true"] if args.apiserver_profile else []
    with LocalCluster(workdir / "cluster", kuberay=False, apiserver_flags=flags) as cluster:
        kuberay_crds = cluster.binaries["kuberay-operator"].parent / "crds"
        cluster.kubectl("apply", "--server-side", "-f", str(kuberay_crds), timeout=120)
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"), timeout=120)
        for namespace in ("burst", "steady", "serving"):
            deadline = time.monotonic() + 120
            while True:
                try:
                    prepare(cluster, namespace)
                    break
                except subprocess.CalledProcessError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
        while not admission_ready(cluster, "burst"):
            time.sleep(1)
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        prepare(cluster, "baseline")
        kube_config.load_kube_config(config_file=str(cluster.kubeconfig))
        configuration = k8s.Configuration.get_default_copy()
        configuration.connection_pool_maxsize = args.threads + 4
        k8s.Configuration.set_default(configuration)

        # The API server's own pace: the same creates in a namespace no operator watches.
        baseline = Timeline()
        with ThreadPoolExecutor(args.threads) as pool:
            list(
                pool.map(
                    lambda n: create("baseline", n, baseline),
                    [f"base-{i:05d}" for i in range(args.burst)],
                )
            )
        baseline_s = max(baseline.created.values()) - min(baseline.created.values())

        health = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO / "operator"),
            "SOVAI_NAMESPACES": "burst,steady,serving",
            "SOVAI_HEALTH_PORT": str(health),
            "SOVAI_METRICS_PORT": "0",
            "SOVAI_RUNTIME_IMAGE": IMAGE,
            **dict(item.split("=", 1) for item in args.operator_env),
        }
        log = (workdir / "operator.log").open("wb")
        operator = subprocess.Popen(
            [sys.executable, "-m", "sovereign_operator"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        children: Children | None = None
        try:
            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{health}/healthz", timeout=1).ok:
                        break
                except requests.RequestException:
                    time.sleep(0.5)
                if operator.poll() is not None:
                    raise SystemExit(f"operator exited; log in {workdir / 'operator.log'}")
            rows: list[tuple[str, str]] = []
            timeline = Timeline()
            stop = threading.Event()
            watch_children("burst", timeline, stop)
            watch_children("steady", timeline, stop)
            time.sleep(1.0)  # let the watches start before the first create

            rss_at_start = rss_mb(operator.pid, "VmRSS")
            pids = {**cluster.component_pids(), "operator": operator.pid, "bench": os.getpid()}
            cpu_before = cpu_snapshot(pids)
            requests_before = request_counts(cluster)
            profile: threading.Thread | None = None
            if args.apiserver_profile:
                profile = threading.Thread(
                    target=lambda: Path(args.apiserver_profile).write_bytes(
                        subprocess.run(
                            [
                                str(cluster.binaries["kubectl"]),
                                f"--kubeconfig={cluster.kubeconfig}",
                                "get",
                                "--raw",
                                "/debug/pprof/profile?seconds=20",
                            ],
                            capture_output=True,
                            check=True,
                        ).stdout
                    ),
                    daemon=True,
                )
                profile.start()
            names = [f"burst-{i:05d}" for i in range(args.burst)]
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(lambda n: create("burst", n, timeline), names))
            created_in = max(timeline.created.values()) - min(timeline.created.values())
            total = wait_all(timeline, names, args.timeout)
            lat = timeline.latencies(names)
            burst_cpu = cpu_rows("burst", cpu_before, cpu_snapshot(pids))
            burst_cpu += request_rows("burst", args.burst, requests_before, request_counts(cluster))
            if profile is not None:
                profile.join()
            rows += [
                (f"API server alone: {args.burst} created in (s)", f"{baseline_s:.1f}"),
                (f"burst: {args.burst} created in (s)", f"{created_in:.1f}"),
                (
                    "burst: all RayJobs + Queued after (s)",
                    "timeout" if total is None else f"{total:.1f}",
                ),
                ("burst: create -> RayJob p50 (s)", f"{percentile(lat, 0.5):.2f}"),
                ("burst: create -> RayJob p99 (s)", f"{percentile(lat, 0.99):.2f}"),
                *burst_cpu,
            ]
            if args.rate > 0:
                steady = [f"steady-{i:05d}" for i in range(int(args.rate * args.duration))]
                start = time.monotonic()
                with ThreadPoolExecutor(4) as pool:
                    for index, name in enumerate(steady):
                        pause = start + index / args.rate - time.monotonic()
                        if pause > 0:
                            time.sleep(pause)
                        pool.submit(create, "steady", name, timeline)
                total = wait_all(timeline, steady, args.timeout)
                lat = timeline.latencies(steady)
                rows += [
                    (
                        f"steady: {len(steady)} at {args.rate:g}/s, all Queued after (s)",
                        "timeout" if total is None else f"{total:.1f}",
                    ),
                    ("steady: create -> RayJob p50 (s)", f"{percentile(lat, 0.5):.2f}"),
                    ("steady: create -> RayJob p99 (s)", f"{percentile(lat, 0.99):.2f}"),
                ]
            if args.deployments > 0:
                # What the cluster asks of itself meanwhile (leader-election leases, kwok's node
                # heartbeats, the jobs' follow-ups): subtracted from the window below.
                interval = float(env.get("SOVAI_RECONCILE_INTERVAL_SECONDS", "10"))
                before = request_counts(cluster)
                time.sleep(3 * interval)
                background = requests_made(before, request_counts(cluster)) - 1
                with ThreadPoolExecutor(args.threads) as pool:
                    list(
                        pool.map(
                            lambda i: k8s.CustomObjectsApi().create_namespaced_custom_object(
                                GROUP,
                                VERSION,
                                "serving",
                                "modeldeployments",
                                modeldeployment(f"serve-{i:05d}", "serving"),
                            ),
                            range(args.deployments),
                        )
                    )
                settled = deployments_settled("serving", args.deployments, 25, args.timeout)
                # Three sweeps (SOVAI_RECONCILE_INTERVAL_SECONDS, 10 s by default) with nothing
                # changing: what following unchanged deployments costs the API server. Every
                # request in the window is counted, the bench's own polls excluded by pausing.
                before = request_counts(cluster)
                time.sleep(3 * interval)
                # Less the first request_counts' own GET, and the background.
                made = requests_made(before, request_counts(cluster)) - 1 - background
                rows += [
                    (
                        f"deployments: {args.deployments} settled",
                        "yes" if settled else "timeout",
                    ),
                    (
                        f"deployments: background requests in {3 * interval:g} s",
                        f"{background:.0f}",
                    ),
                    (
                        "deployments: requests per unchanged one per sweep",
                        f"{made / (3 * args.deployments):.3f}",
                    ),
                ]
            following = len(timeline.created)
            rows.append(
                (
                    f"operator peak RSS, {following} FineTuneJobs, "
                    f"{args.deployments} ModelDeployments (MB)",
                    f"{rss_mb(operator.pid):.0f}",
                )
            )
            rows.append(("operator RSS before the first job (MB)", f"{rss_at_start:.0f}"))
            # Two sweeps of the operator later (SOVAI_RECONCILE_INTERVAL_SECONDS, 10 s by
            # default): whether what the burst allocated stays resident.
            time.sleep(25)
            rows.append(
                (
                    f"operator RSS at rest after, {following} jobs (MB)",
                    f"{rss_mb(operator.pid, 'VmRSS'):.0f}",
                )
            )
            stop.set()
            children = children_of("burst", names[0]) if args.floor else None
        finally:
            operator.terminate()
            operator.wait(timeout=30)
            log.close()
        if children is not None:
            # The operator is stopped: the API server and the client alone, back to back.
            # Then one write more at each step, each step in a namespace of its own: what each
            # of the operator's writes adds to the floor.
            for step in range(len(FLOOR_STEPS) + 1):
                prepare(cluster, f"floor-{step}")
            floor_names = [f"floor-{i:05d}" for i in range(args.burst)]
            alone = timed(args.threads, floor_names, lambda n: create("floor-0", n, Timeline()))
            rows.append(
                (f"floor: API server alone again, {args.burst} created in (s)", f"{alone:.1f}")
            )
            floor = alone
            for step in range(1, len(FLOOR_STEPS) + 1):
                keys = [key for key, _ in FLOOR_STEPS[:step]]
                floor = timed(
                    args.threads,
                    floor_names,
                    partial(replay, f"floor-{step}", children=children, steps=keys),
                )
                made = " + ".join(["create", *(what for _, what in FLOOR_STEPS[:step])])
                rows.append((f"floor: {made}, made by the client (s)", f"{floor:.1f}"))
            writes = 2 + len(children["rayjobs"]) + len(children["networkpolicies"])
            writes += len(children["events"])
            rows.append(
                (
                    f"floor: ratio, the operator's {writes} writes per job / creates alone",
                    f"{floor / alone:.1f}x",
                )
            )
    width = max(len(k) for k, _ in rows)
    print(
        f"operator_scale on {platform.node()} ({os.cpu_count()} CPUs), "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC"
    )
    for key, value in rows:
        print(f"{key:<{width}}  {value:>8}")
    print(
        f"p50/p99 of {statistics.mean(lat) if lat else float('nan'):.2f} s mean; logs in {workdir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
