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
- the operator's peak RSS (VmHWM) and how many FineTuneJobs it was following then.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from kubernetes import client as k8s
from kubernetes import config as kube_config
from kubernetes import watch

from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.processes import free_port

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION, PLURAL = "sovereign-ai.eu", "v1alpha1", "finetunejobs"
IMAGE = "registry.eu-west-par.example.eu/sovereign-ai/training:0.1.0"


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


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set, kept by the kernel."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def policy(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SovereigntyPolicy",
        "metadata": {"name": f"bench-{namespace}"},
        "spec": {
            "allowedRegions": ["eu-west-par", "eu-central-fra"],
            "allowedStorage": [{"scheme": "s3", "host": "eu-*"}],
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


def watch_children(
    namespace: str, timeline: Timeline, stop: threading.Event
) -> list[threading.Thread]:
    """Record the first time each RayJob appears and each FineTuneJob reports Queued."""

    def rayjobs() -> None:
        api = k8s.CustomObjectsApi()
        while not stop.is_set():
            # A loaded API server answers 504 to a watch now and then: list and watch again.
            with contextlib.suppress(k8s.ApiException):
                for event in watch.Watch().stream(
                    api.list_namespaced_custom_object,
                    "ray.io",
                    "v1",
                    namespace,
                    "rayjobs",
                    timeout_seconds=5,
                ):
                    name = event["object"]["metadata"]["name"]
                    with timeline.lock:
                        timeline.rayjob_seen.setdefault(name, time.monotonic())

    def queued() -> None:
        api = k8s.CustomObjectsApi()
        while not stop.is_set():
            with contextlib.suppress(k8s.ApiException):
                for event in watch.Watch().stream(
                    api.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    timeout_seconds=5,
                ):
                    obj = event["object"]
                    if (obj.get("status") or {}).get("phase") in ("Queued", "Running"):
                        with timeline.lock:
                            timeline.queued_seen.setdefault(
                                obj["metadata"]["name"], time.monotonic()
                            )

    threads = [threading.Thread(target=fn, daemon=True) for fn in (rayjobs, queued)]
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
    parser.add_argument("--threads", type=int, default=8, help="client threads of the burst")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="SOVAI_X=V",
        help="extra operator settings, e.g. SOVAI_MAX_WORKERS=8",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="sovai-bench-"))
    with LocalCluster(workdir / "cluster", kuberay=False) as cluster:
        kuberay_crds = cluster.binaries["kuberay-operator"].parent / "crds"
        cluster.kubectl("apply", "--server-side", "-f", str(kuberay_crds), timeout=120)
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"), timeout=120)
        for namespace in ("burst", "steady"):
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
            "SOVAI_NAMESPACES": "burst,steady",
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

            names = [f"burst-{i:05d}" for i in range(args.burst)]
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(lambda n: create("burst", n, timeline), names))
            created_in = max(timeline.created.values()) - min(timeline.created.values())
            total = wait_all(timeline, names, args.timeout)
            lat = timeline.latencies(names)
            rows += [
                (f"API server alone: {args.burst} created in (s)", f"{baseline_s:.1f}"),
                (f"burst: {args.burst} created in (s)", f"{created_in:.1f}"),
                (
                    "burst: all RayJobs + Queued after (s)",
                    "timeout" if total is None else f"{total:.1f}",
                ),
                ("burst: create -> RayJob p50 (s)", f"{percentile(lat, 0.5):.2f}"),
                ("burst: create -> RayJob p99 (s)", f"{percentile(lat, 0.99):.2f}"),
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
            following = len(timeline.created)
            rows.append(
                (
                    f"operator peak RSS, {following} FineTuneJobs (MB)",
                    f"{peak_rss_mb(operator.pid):.0f}",
                )
            )
            stop.set()
        finally:
            operator.terminate()
            operator.wait(timeout=30)
            log.close()
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
