"""Child processes of the local cluster: started with a log file, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class ClusterStartError(RuntimeError):
    """A component failed to start; the message carries the tail of its log."""


# Every port this process has handed out. The kernel may give the same free port to two binds in
# a row once the first socket is closed, and a component started later (weed's volume server and
# filer, one process) then finds its second listener's port taken by its first.
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now and that this process has not
    handed out before."""
    with _handed_out_lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port: int = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """One component, in its own process group so that stopping it stops its children too."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self._env = {**os.environ, **(env or {})}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env,
                cwd=self.cwd,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def failure(self, reason: str) -> ClusterStartError:
        return ClusterStartError(
            f"{self.name} {reason}. Last lines of {self.log_path}:\n{tail(self.log_path)}"
        )

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``check`` until true; fail fast if the process dies, loudly on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                code = self._proc.returncode if self._proc else None
                raise self.failure(f"exited with code {code} before it was {what}")
            try:
                if check():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise self.failure(f"was not {what} within {timeout:.0f} s")

    def stop(self, grace: float = 10.0) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self._proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self._proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # The leader is gone; a child of its group that ignored SIGTERM (or that the leader
        # left behind) would outlive the cluster, so what is left of the group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
            # A SIGKILL lands when the kernel next runs each member, later on a busy machine:
            # wait for that, so that nothing of the group is left once stop returns.
            deadline = time.monotonic() + 5.0
            while self.group_members() and time.monotonic() < deadline:
                time.sleep(0.02)

    def group_members(self) -> list[int]:
        """PIDs of this component's process group still alive (zombies aside): none once it is
        stopped. Used to check a teardown before saying that it is complete."""
        if self._proc is None:
            return []
        return processes_in_group(self._proc.pid)


def pids_where(test: Callable[[Path], bool]) -> list[int]:
    """PIDs of this machine's processes whose /proc folder passes ``test`` (a process that
    exits while it is read is left out)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if test(proc):
                pids.append(int(proc.name))
    return pids


def processes_in_group(pgid: int) -> list[int]:
    def member(proc: Path) -> bool:
        stat = (proc / "stat").read_text()
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        return int(pgrp) == pgid and state != "Z"

    return pids_where(member)
