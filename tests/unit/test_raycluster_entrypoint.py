"""The rayCluster backend's entrypoint, run by a real shell as Ray's job supervisor runs it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sovereign_operator.backends.raycluster import build_entrypoint

UID = "0b6c1f7e-1111-2222-3333-444455556666"


def run(trainer: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(build_entrypoint(trainer, UID))
    env = {**os.environ, "TMPDIR": str(tmp_path), "SOVAI_JOB_CONFIG": json.dumps({"a": 1})}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("status", [0, 3])
def test_the_trainer_reads_the_config_and_the_file_goes_afterwards(
    tmp_path: Path, status: int
) -> None:
    # A stand-in for the trainer: prints the file it was given, then exits with `status`.
    trainer = f"sh -c 'cat \"$2\"; exit {status}' trainer"
    result = run(trainer, tmp_path)
    assert result.stdout == '{"a": 1}'
    assert result.returncode == status
    assert list(tmp_path.iterdir()) == []


def test_a_stopped_job_leaves_no_config_behind(tmp_path: Path) -> None:
    argv = shlex.split(build_entrypoint("sh -c 'sleep 30' trainer", UID))
    env = {**os.environ, "TMPDIR": str(tmp_path), "SOVAI_JOB_CONFIG": "{}"}
    # Ray's job stop signals the entrypoint's process group.
    shell = subprocess.Popen(argv, env=env, start_new_session=True)
    deadline = time.monotonic() + 10
    while not list(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p.name for p in tmp_path.iterdir()] == [f"sovai-{UID}.json"]
    os.killpg(shell.pid, signal.SIGTERM)
    assert shell.wait(timeout=10) == 143
    assert list(tmp_path.iterdir()) == []
