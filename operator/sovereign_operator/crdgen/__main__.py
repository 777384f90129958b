"""`python -m sovereign_operator.crdgen [--out DIR] [--check]`: write or verify crds/."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .render import render_all


def main(argv: list[str] | None = None) -> int:
    """Write the generated manifests, or with --check report files that differ."""
    parser = argparse.ArgumentParser(prog="python -m sovereign_operator.crdgen")
    parser.add_argument("--out", type=Path, default=Path("crds"), help="output folder")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file differs"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    drifted = []
    for name, content in render_all().items():
        path = out / name
        if args.check:
            if not path.exists() or path.read_text() != content:
                drifted.append(str(path))
            continue
        out.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            print(f"wrote {path}")
    if drifted:
        print("out of date (run `make crds`): " + ", ".join(drifted), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
