"""What each image is built from: its Containerfile, lock, parent and build argument.

Pure data. ``inputs_digest`` names an image's build by everything it depends on, so that an
unchanged image is never built twice (``make images`` finds it in the cache by that digest).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .references import BASE_IMAGE, DEBIAN_IMAGE, OPERATOR_IMAGE, PAUSE_IMAGE, RUNTIME_IMAGE

# Raise when the way images are built changes in a way their inputs do not show.
BUILD_FORMAT = 1

DEBIAN_SUITE = "bookworm"
# Debian's own mirror and its security updates: the root filesystem is made from Debian's
# signed packages, never from an image registry.
DEBIAN_SOURCES = (
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE} main",
    f"deb http://deb.debian.org/debian {DEBIAN_SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {DEBIAN_SUITE}-security main",
)
ROOTFS_FILE = "rootfs.tar"
PROGRAM_FILE = "pause"
# As Debian's slim images do: no manuals, translations or docs, except the copyright files that
# the packages' licences ask to ship. mmdebstrap keeps these in /etc/dpkg/dpkg.cfg.d, so the
# packages the base image adds later obey them too.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)


@dataclass(frozen=True)
class ImageDefinition:
    """One image of the build, in build order."""

    name: str
    reference: str
    containerfile: str  # relative to the repository root
    lock: str | None = None  # the pinned Python dependencies it installs
    wheel: bool = False  # installs the project's wheel (from dist/ in the build context)
    parent: str | None = None  # the image passed as ``parent_arg``
    parent_arg: str = "BASE"
    published: bool = False  # pushed to a registry: gets an SBOM and a line in the summary
    rootfs: bool = False  # its context holds a Debian root filesystem made by mmdebstrap
    go_program: str | None = None  # a Go module compiled into the context as ``PROGRAM_FILE``
    # Free disk a build needs at its peak: the container's writes, the layer committed from
    # them, the OCI layout and the archive made from it (measured: docs/benchmarks.md).
    disk_gib: float = 2


DEFINITIONS: tuple[ImageDefinition, ...] = (
    ImageDefinition("debian", DEBIAN_IMAGE, "images/debian/Containerfile", rootfs=True),
    ImageDefinition(
        "base", BASE_IMAGE, "images/base/Containerfile", parent="debian", parent_arg="DEBIAN"
    ),
    ImageDefinition(
        "operator",
        OPERATOR_IMAGE,
        "images/operator/Containerfile",
        lock="images/operator/requirements.lock",
        wheel=True,
        parent="base",
        published=True,
    ),
    ImageDefinition(
        "runtime",
        RUNTIME_IMAGE,
        "images/runtime/Containerfile",
        lock="images/runtime/requirements.lock",
        wheel=True,
        parent="base",
        published=True,
        disk_gib=16,
    ),
    ImageDefinition("pause", PAUSE_IMAGE, "images/pause/Containerfile", go_program="hack/go/pause"),
)
BY_NAME = {definition.name: definition for definition in DEFINITIONS}


def mmdebstrap_argv(destination: Path) -> list[str]:
    """The command that makes the Debian root filesystem (minbase: essential packages and apt;
    the base image's Containerfile adds Python)."""
    return [
        "mmdebstrap", "--variant=minbase", "--quiet",
        *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
        DEBIAN_SUITE, str(destination), *DEBIAN_SOURCES,
    ]  # fmt: skip


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def tree_digest(folder: Path) -> str:
    """The digest of every file below ``folder``, with their relative paths."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder)}\0{file_digest(path)}\0".encode())
    return f"sha256:{digest.hexdigest()}"


def go_build_argv(program: Path, output: Path) -> list[str]:
    """A static build of a Go program (no cgo: it runs in an image FROM scratch)."""
    return ["go", "build", "-C", str(program), "-trimpath", "-ldflags", "-s -w", "-o",
            str(output), "."]  # fmt: skip


def inputs_digest(
    definition: ImageDefinition,
    repo: Path,
    wheel_digest: str | None,
    parent_image_id: str | None,
) -> str:
    """The digest of everything the image's build reads: its Containerfile, its lock, the
    project's wheel, the parent image's id and the build's own format."""
    inputs: dict[str, object] = {
        "format": BUILD_FORMAT,
        "reference": definition.reference,
        "containerfile": file_digest(repo / definition.containerfile),
        "lock": file_digest(repo / definition.lock) if definition.lock else None,
        "wheel": wheel_digest if definition.wheel else None,
        "parent": parent_image_id,
        "mmdebstrap": mmdebstrap_argv(Path(ROOTFS_FILE)) if definition.rootfs else None,
        "program": tree_digest(repo / definition.go_program) if definition.go_program else None,
    }
    encoded = json.dumps(inputs, sort_keys=True).encode()
    return f"sha256:{hashlib.sha256(encoded).hexdigest()}"
