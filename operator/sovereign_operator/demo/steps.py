"""Numbered, logged demo steps: each says what it does, and a failure says where to look."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


class StepFailedError(RuntimeError):
    """A demo step failed; the message names the step and its log."""


class Steps:
    """Prints ``[n/N] title`` and timings; captures each step's detail in its own log file."""

    def __init__(self, total: int, log_dir: Path, out: TextIO = sys.stdout) -> None:
        self.total = total
        self.log_dir = log_dir
        self.out = out
        self.number = 0
        self.started = time.monotonic()
        log_dir.mkdir(parents=True, exist_ok=True)

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def show(self, text: str) -> None:
        """Terminal output the user should see, indented under the step."""
        for line in text.rstrip().splitlines():
            self.say(f"    {line}")

    @contextmanager
    def step(self, title: str) -> Iterator[Path]:
        """Run one step; yield the path of its log. Exceptions become StepFailedError."""
        self.number += 1
        slug = "".join(c if c.isalnum() else "-" for c in title.lower())[:40].strip("-")
        log = self.log_dir / f"{self.number:02d}-{slug}.log"
        self.say(f"\n[{self.number}/{self.total}] {title}")
        begin = time.monotonic()
        try:
            yield log
        except (KeyboardInterrupt, StepFailedError):
            raise
        except Exception as error:
            detail = str(error)
            stderr = error.stderr if isinstance(error, subprocess.CalledProcessError) else None
            if stderr and stderr not in detail:
                detail += f"\n{stderr}"
            raise StepFailedError(
                f"step {self.number} ({title}) failed: {detail}\n"
                f"its log: {log}\nall logs: {self.log_dir}"
            ) from error
        self.say(f"    done in {time.monotonic() - begin:.0f} s")

    def wait(
        self,
        check: Callable[[], object],
        timeout: float,
        what: str,
        interval: float = 2.0,
        progress: Callable[[], str | None] | None = None,
    ) -> object:
        """Poll ``check``; print ``progress()`` whenever it changes; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        last_line: str | None = None
        while time.monotonic() < deadline:
            value = check()
            if progress is not None:
                line = progress()
                if line and line != last_line:
                    self.show(line)
                    last_line = line
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
