"""`python -m sovereign_operator.images`: build the images (`make images`), or run one."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .build import BuiltImage, ImageBuildError, build_images, read_index
from .container import unpack
from .storage import StorageError

DEFAULT_OUT = Path("build/images")


def _size(count: int) -> str:
    return f"{count / 1e6:,.0f} MB"


def summary(images: Sequence[BuiltImage]) -> str:
    """A table of what was built: reference, digest, sizes, and whether it came from the cache."""
    rows = [("image", "manifest digest", "unpacked", "archive", "layers", "build")]
    for image in images:
        rows.append(
            (
                image.reference,
                image.manifest_digest,
                _size(image.unpacked_bytes),
                _size(image.archive_bytes),
                str(image.layers),
                "cached" if image.cached else f"{image.build_seconds:.0f} s",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def _build(args: argparse.Namespace) -> int:
    images = build_images(Path(args.repo).resolve(), args.only, args.force, Path(args.out))
    print(summary(images))
    for image in images:
        if image.sbom:
            print(f"{image.name}: {Path(args.out) / f'{image.name}.oci.tar'}, SBOM {image.sbom}")
    return 0


def _run(args: argparse.Namespace) -> int:
    image = read_index(Path(args.out))[args.name]
    with tempfile.TemporaryDirectory(prefix=f"sovai-run-{args.name}-") as scratch:
        bundle = unpack(Path(image.archive), Path(scratch))
        result = bundle.run(args.args, read_only=not args.writable)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sovereign_operator.images", description=__doc__
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="index and links (build/images)")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build what changed; print digests and sizes")
    build.add_argument("only", nargs="*", help="image names (default: all)")
    build.add_argument("--repo", default=".", help="the source checkout")
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    build.set_defaults(handler=_build)
    run = commands.add_parser("run", help="run a command in a built image (umoci + runc)")
    run.add_argument("name", help="operator or runtime")
    run.add_argument("args", nargs=argparse.REMAINDER, help="replaces the image's CMD")
    run.add_argument("--writable", action="store_true", help="writable root filesystem")
    run.set_defaults(handler=_run)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="[images %(asctime)s] %(message)s", datefmt="%H:%M:%S"
    )
    try:
        code: int = args.handler(args)
    except (ImageBuildError, StorageError) as error:
        logging.getLogger(__name__).error("%s", error)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
