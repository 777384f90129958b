"""`make setup` installs with the uv that the dev extra pins (and `make lock` runs)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_makefile_uv_is_the_dev_extras_uv() -> None:
    makefile = (REPO / "Makefile").read_text()
    found = re.search(r"^UV_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert found is not None, "Makefile: no UV_VERSION"
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f"uv=={found.group(1)}" in dev["dev"]
