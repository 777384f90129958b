"""How fast the operator's audit log appends and reads, on the local S3-compatible store.

    python bench/audit_log.py                # 300 records per case
    python bench/audit_log.py -n 1000

Starts SeaweedFS (the store the local cluster runs, built by `make control-plane`) on loopback
and measures, each on a fresh bucket:

- one writer appending N records (one conditional PUT each), without and with Object Lock;
- two writers appending N records between them at once (the leader-change case): each refused
  PUT costs a read of what the other wrote;
- an operator's start-up: reading a chain of N records (list + one GET each);
- `sovai audit verify`'s reading and checking of the same chain (every version).

Prints a table: records/s, ms per record (p50, p99) and the conflicts seen.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sovereign_operator.audit.log import AuditLog, Location
from sovereign_operator.audit.records import Fact, Subject
from sovereign_operator.audit.verify import check_chain, read_store
from sovereign_operator.devcluster import ensure_binaries, s3store


class CountingClient:
    """A boto3 client that counts refused conditional PUTs (a conflict between writers)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.conflicts = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)

    def put_object(self, **kwargs: object) -> object:
        try:
            return self._client.put_object(**kwargs)
        except Exception:
            self.conflicts += 1
            raise


def facts(count: int, writer: int) -> list[Fact]:
    subject = Subject("FineTuneJob", "bench", f"job-{writer}", f"uid-{writer}")
    return [Fact(subject, "PodPlaced", f"pod/{writer}/{i}", {"pod": f"p{i}"}) for i in range(count)]


def timed_appends(log: AuditLog, items: list[Fact]) -> list[float]:
    times = []
    for fact in items:
        started = time.perf_counter()
        log.append([fact])
        times.append(time.perf_counter() - started)
    return times


def row(case: str, count: int, seconds: float, times: list[float], conflicts: int) -> str:
    ms = sorted(t * 1000 for t in times) or [0.0]
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"| {case} | {count} | {seconds:.1f} | {count / seconds:.0f} | "
        f"{statistics.median(ms):.1f} | {p99:.1f} | {conflicts} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=300, help="records per case")
    args = parser.parse_args()
    weed = ensure_binaries()["weed"]
    root = Path(tempfile.mkdtemp(prefix="sovai-bench-audit-"))
    layout = s3store.new_layout(root, "127.0.0.1")
    store = s3store.new_credentials(layout.endpoint)
    config = s3store.prepare(root, store)
    argv = s3store.weed_argv(weed, layout, config)
    with (root / "weed.log").open("wb") as out:
        server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    rows = []
    try:
        deadline = time.monotonic() + 120
        while not s3store.answers(layout.endpoint):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"SeaweedFS did not start; see {root / 'weed.log'}")
            time.sleep(0.5)
        for case, locked in (("1 writer", False), ("1 writer, Object Lock", True)):
            bucket = f"bench-{int(locked)}"
            if locked:
                s3store.make_locked_bucket(store, bucket)
            else:
                s3store.admin_client(store).create_bucket(Bucket=bucket)
            # The store makes a bucket's first volume on its first write (seconds): not the log's.
            s3store.admin_client(store).put_object(Bucket=bucket, Key="warm-up", Body=b"")
            client = CountingClient(s3store.admin_client(store))
            log = AuditLog(client, Location(bucket, "log/"), writer="bench")
            started = time.perf_counter()
            times = timed_appends(log, facts(args.n, 0))
            rows.append(row(case, args.n, time.perf_counter() - started, times, client.conflicts))

        s3store.admin_client(store).create_bucket(Bucket="bench-two")
        s3store.admin_client(store).put_object(Bucket="bench-two", Key="warm-up", Body=b"")
        clients = [CountingClient(s3store.admin_client(store)) for _ in range(2)]
        logs = [
            AuditLog(c, Location("bench-two", "log/"), writer=f"w{i}")
            for i, c in enumerate(clients)
        ]
        results: list[list[float]] = [[], []]

        def write(i: int) -> None:
            results[i] = timed_appends(logs[i], facts(args.n // 2, i))

        started = time.perf_counter()
        threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        conflicts = sum(c.conflicts for c in clients)
        rows.append(row("2 writers at once", args.n, seconds, results[0] + results[1], conflicts))

        location = Location("bench-1", "log/")
        started = time.perf_counter()
        reader = AuditLog(s3store.admin_client(store), location, writer="reader")
        reader.load()
        seconds = time.perf_counter() - started
        rows.append(row("operator start-up: read the chain", args.n, seconds, [], 0))

        started = time.perf_counter()
        chain = check_chain(*read_store(s3store.admin_client(store), location))
        seconds = time.perf_counter() - started
        assert chain.ok, chain.findings
        rows.append(row("verify: read every version, check", args.n, seconds, [], 0))
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
        for socket in layout.grpc_sockets():
            socket.unlink(missing_ok=True)
    print(
        f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} cores; store: SeaweedFS on loopback"
    )
    print("| case | records | seconds | records/s | ms p50 | ms p99 | refused PUTs |")
    print("|---|---|---|---|---|---|---|")
    for line in rows:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
