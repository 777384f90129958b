"""Stopping a component stops its whole process group, and says what is left (real processes)."""

from __future__ import annotations

import time
from pathlib import Path

from sovereign_operator.devcluster.processes import ManagedProcess, free_port, processes_in_group

# A leader that exits on SIGTERM, and a child of its group that ignores SIGTERM: before the
# fix, stopping the leader left the child running after the cluster was "stopped".
STUBBORN = "trap '' TERM; sleep 300 & trap 'exit 0' TERM; wait"


def test_stop_leaves_no_member_of_the_group(tmp_path: Path) -> None:
    process = ManagedProcess("stubborn", ["sh", "-c", STUBBORN], tmp_path)
    process.start()
    deadline = time.monotonic() + 10
    while len(process.group_members()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(process.group_members()) == 2  # the shell and its sleep
    process.stop(grace=5)
    assert process.group_members() == []


def test_an_unstarted_or_absent_group_has_no_members(tmp_path: Path) -> None:
    assert ManagedProcess("never", ["true"], tmp_path).group_members() == []
    assert processes_in_group(2**22 + 7) == []  # above pid_max's default range


def test_free_ports_are_never_handed_out_twice() -> None:
    # The kernel hands the same free port to binds in a row once each socket is closed; a
    # component given two of them (weed's volume server and filer) then failed to start.
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
