"""Build the product's images on a machine with no container engine and no registry.

buildah builds the Containerfiles in ``images/`` on a Debian root filesystem that mmdebstrap
makes from Debian's packages; pip installs the locked dependencies from the package index. Each
image ends as an OCI archive (gzip layers, as a registry would serve them, so its manifest digest
is the digest a push that keeps the layers gets), a CycloneDX SBOM from syft beside it, and an
``image.json`` with its digests and sizes. Archives are cached by the digest of their inputs
under ``${XDG_CACHE_HOME:-~/.cache}/sovereign-ai/images``: an image whose inputs did not change
is not built again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..devcluster.binaries import find_tool
from . import storage
from .definitions import (
    BY_NAME,
    DEFINITIONS,
    PROGRAM_FILE,
    ROOTFS_FILE,
    ImageDefinition,
    file_digest,
    go_build_argv,
    inputs_digest,
    mmdebstrap_argv,
)

log = logging.getLogger(__name__)

ARCHIVE = "image.oci.tar"
SBOM = "sbom.cdx.json"
METADATA = "image.json"
# pip inside a build step trusts the same certificate authorities as this machine: mounted for
# the RUN steps of images that pip-install, so nothing of it lands in an image.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
REQUIRED_COMMANDS = ("buildah", "mmdebstrap")


class ImageBuildError(RuntimeError):
    """A build step failed; the message names the step and carries its output."""


@dataclass(frozen=True)
class BuiltImage:
    """One image as built (or found in the cache)."""

    name: str
    reference: str
    inputs_digest: str
    manifest_digest: str
    image_id: str
    archive: str
    archive_bytes: int
    unpacked_bytes: int
    layers: int
    sbom: str | None
    build_seconds: float
    cached: bool = False

    @classmethod
    def load(cls, folder: Path) -> BuiltImage | None:
        """The image recorded in a cache folder, or None when it is incomplete."""
        try:
            data = json.loads((folder / METADATA).read_text())
        except (OSError, ValueError):
            return None
        image = cls(**{**data, "cached": True})
        if not Path(image.archive).is_file():
            return None
        return image


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sovereign-ai" / "images"


# syft asks the internet for a newer syft unless told not to; the pause program runs FROM scratch.
TOOL_ENV = {"SYFT_CHECK_FOR_APP_UPDATE": "false", "CGO_ENABLED": "0"}


def run(argv: Sequence[str], step: str, cwd: Path | None = None) -> str:
    """Run one build command; a failure raises with the command's own output."""
    log.debug("%s: %s", step, " ".join(argv))
    result = subprocess.run(
        list(argv),
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **TOOL_ENV},
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise ImageBuildError(
            f"{step} failed (exit {result.returncode}): {' '.join(argv)}\n"
            + "\n".join(output[-40:])
        )
    return result.stdout


def check_tools() -> Path:
    """buildah and mmdebstrap on PATH and syft in the binaries cache; returns syft's path."""
    missing = [name for name in REQUIRED_COMMANDS if shutil.which(name) is None]
    if missing:
        raise ImageBuildError(
            f"missing {', '.join(missing)}: run hack/install-packages.sh (Debian's packages "
            "buildah, mmdebstrap, umoci and runc), or `make images`, which runs it"
        )
    syft = find_tool("syft")
    if syft is None:
        raise ImageBuildError(
            "syft is not built: run `hack/build-control-plane.sh syft` (`make images` does)"
        )
    return syft


def build_wheel(repo: Path, dest: Path) -> Path:
    """The project's wheel (hatchling's wheels are reproducible: same sources, same digest)."""
    # uv comes with the dev extra, beside this interpreter.
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv") or "uv"
    run([uv, "build", "--wheel", "--quiet", "--out-dir", str(dest), str(repo)], "wheel build")
    wheels = sorted(dest.glob("sovereign_ai_operator-*-py3-none-any.whl"))
    if len(wheels) != 1:
        raise ImageBuildError(f"expected one wheel in {dest}, found {[w.name for w in wheels]}")
    return wheels[0]


def local_image_id(reference: str) -> str | None:
    result = subprocess.run(
        ["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", reference],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def load_into_storage(image: BuiltImage) -> None:
    """Make a cached image available to buildah as a parent, from its archive if need be."""
    if local_image_id(image.reference) == image.image_id:
        return
    pulled = run(["buildah", "pull", "--quiet", f"oci-archive:{image.archive}"], "load parent")
    run(["buildah", "tag", pulled.strip().splitlines()[-1], image.reference], "tag parent")


def unpacked_size(layout: Path) -> tuple[int, int]:
    """(bytes of all layers uncompressed, number of layers) of an OCI image layout."""

    def blob(digest: str) -> Path:
        return layout / "blobs" / digest.replace(":", "/")

    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    total = 0
    for layer in manifest["layers"]:
        inflate = zlib.decompressobj(zlib.MAX_WBITS | 16) if "gzip" in layer["mediaType"] else None
        with blob(layer["digest"]).open("rb") as stream:
            while chunk := stream.read(1 << 20):
                total += len(inflate.decompress(chunk)) if inflate else len(chunk)
    return total, len(manifest["layers"])


def write_archive(layout: Path, archive: Path) -> None:
    """An OCI archive is the image layout as one tar, with the layout's own paths.

    Each blob is removed once it is in the tar, so the runtime's gigabytes are on disk once,
    not twice."""
    run(["tar", "-C", str(layout), "--remove-files", "-cf", str(archive), "oci-layout",
         "index.json", "blobs"], "archive")  # fmt: skip


def build_one(
    definition: ImageDefinition,
    repo: Path,
    digest: str,
    wheel: Path | None,
    parent: BuiltImage | None,
    syft: Path,
) -> BuiltImage:
    """Build one image into its cache folder, named by the digest of its inputs."""
    started = time.monotonic()
    folder = cache_root() / f"{definition.name}-{digest.removeprefix('sha256:')[:20]}"
    staging = Path(tempfile.mkdtemp(prefix=f".{definition.name}-", dir=cache_root()))
    try:
        context = staging / "context"
        shutil.copytree(repo / "images", context / "images")
        if wheel is not None:
            (context / "dist").mkdir()
            shutil.copy2(wheel, context / "dist" / wheel.name)
        containerfile = context / definition.containerfile
        if definition.rootfs:
            log.info("%s: making the Debian root filesystem with mmdebstrap", definition.name)
            run(mmdebstrap_argv(context / ROOTFS_FILE), "mmdebstrap")
        if definition.go_program:
            log.info("%s: compiling %s", definition.name, definition.go_program)
            run(go_build_argv(repo / definition.go_program, context / PROGRAM_FILE), "go build")
        argv = [
            "buildah", "build", "--layers", "--pull=never", "--isolation=chroot",
            "--network=host", "--format=oci", "--quiet", "--force-rm",
            "--file", str(containerfile), "--tag", definition.reference,
        ]  # fmt: skip
        if parent is not None:
            load_into_storage(parent)
            argv += ["--build-arg", f"{definition.parent_arg}={parent.reference}"]
        if definition.lock and HOST_CA_BUNDLE.is_file():  # apt would write this very file
            argv += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
        log.info("%s: buildah build -f %s", definition.name, definition.containerfile)
        run([*argv, str(context)], f"build of {definition.name}")
        image_id = local_image_id(definition.reference)
        if image_id is None:
            raise ImageBuildError(f"buildah built {definition.reference} but cannot inspect it")
        layout = staging / "layout"
        digest_file = staging / "manifest-digest"
        log.info("%s: writing the OCI image", definition.name)
        run(
            [
                "buildah", "push", "--quiet", "--format=oci", "--digestfile", str(digest_file),
                definition.reference, f"oci:{layout}:{definition.reference}",
            ],
            f"push of {definition.name} to an OCI layout",
        )  # fmt: skip
        sbom: str | None = None
        if definition.published:
            log.info("%s: writing the SBOM with syft", definition.name)
            # From the layout, not the archive: syft refuses archive entries over 2 GiB (the
            # runtime's torch layer), taking them for decompression bombs.
            run(
                [
                    str(syft), "scan", f"oci-dir:{layout}", "--quiet",
                    "--source-name", definition.reference.rsplit(":", 1)[0],
                    "--source-version", definition.reference.rsplit(":", 1)[1],
                    "--output", f"cyclonedx-json={staging / SBOM}",
                ],
                f"SBOM of {definition.name}",
            )  # fmt: skip
            sbom = str(folder / SBOM)
        unpacked, layers = unpacked_size(layout)
        archive = staging / ARCHIVE
        write_archive(layout, archive)
        image = BuiltImage(
            name=definition.name,
            reference=definition.reference,
            inputs_digest=digest,
            manifest_digest=digest_file.read_text().strip(),
            image_id=f"sha256:{image_id}",
            archive=str(folder / ARCHIVE),
            archive_bytes=archive.stat().st_size,
            unpacked_bytes=unpacked,
            layers=layers,
            sbom=sbom,
            build_seconds=round(time.monotonic() - started, 1),
        )
        for scratch in (context, layout):
            shutil.rmtree(scratch)
        digest_file.unlink()
        (staging / METADATA).write_text(json.dumps(asdict(image), indent=2) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)  # the cache entry appears whole, or not at all
        return image
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_images(
    repo: Path, names: Sequence[str] = (), force: bool = False, out: Path | None = None
) -> list[BuiltImage]:
    """Build (or find in the cache) the images named, with the parents they need, in order.

    ``out`` gets ``images.json`` (every image built) and, for the published images, links to
    their archive and SBOM, named ``<name>.oci.tar`` and ``<name>.sbom.cdx.json``.
    """
    wanted = _with_parents(names or [d.name for d in DEFINITIONS])
    syft = check_tools()
    with storage.exclusive_build(cache_root()):
        storage.remove_build_containers([d.reference for d in DEFINITIONS])
        storage.prune_images()
        images = _build_wanted(repo, wanted, force, syft)
    if out is not None:
        write_index(images, out)
    return images


def _build_wanted(repo: Path, wanted: set[str], force: bool, syft: Path) -> list[BuiltImage]:
    built: dict[str, BuiltImage] = {}
    layers = storage.graph_root()
    with tempfile.TemporaryDirectory(prefix="sovai-wheel-") as wheel_dir:
        wheel = (
            build_wheel(repo, Path(wheel_dir)) if any(BY_NAME[n].wheel for n in wanted) else None
        )
        wheel_digest = file_digest(wheel) if wheel else None
        for definition in DEFINITIONS:
            if definition.name not in wanted:
                continue
            parent = built[definition.parent] if definition.parent else None
            digest = inputs_digest(
                definition, repo, wheel_digest, parent.image_id if parent else None
            )
            folder = cache_root() / f"{definition.name}-{digest.removeprefix('sha256:')[:20]}"
            cached = None if force else BuiltImage.load(folder)
            if cached is not None and cached.inputs_digest == digest:
                built[definition.name] = cached
                continue
            # The entry this build replaces goes first: its archive is space this build needs.
            prune_cache(definition.name, keep=folder)
            storage.require_free_space(definition.name, definition.disk_gib, layers, cache_root())
            built[definition.name] = build_one(
                definition, repo, digest, wheel if definition.wheel else None, parent, syft
            )
            storage.prune_images()
    return [built[d.name] for d in DEFINITIONS if d.name in built]


def prune_cache(name: str, keep: Path) -> None:
    """Keep only the build of an image for the current inputs: a runtime archive is gigabytes,
    and each change to the project's code makes a new one."""
    for folder in cache_root().glob(f"{name}-*"):
        if folder != keep:
            shutil.rmtree(folder, ignore_errors=True)


def _with_parents(names: Sequence[str]) -> set[str]:
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise ImageBuildError(f"unknown image {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    wanted: set[str] = set()
    for name in names:
        current: str | None = name
        while current is not None:
            wanted.add(current)
            current = BY_NAME[current].parent
    return wanted


def write_index(images: Sequence[BuiltImage], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "images.json").write_text(json.dumps([asdict(i) for i in images], indent=2) + "\n")
    for image in images:
        if not BY_NAME[image.name].published:
            continue
        for target, name in ((image.archive, f"{image.name}.oci.tar"),
                             (image.sbom, f"{image.name}.sbom.cdx.json")):  # fmt: skip
            link = out / name
            link.unlink(missing_ok=True)
            if target:
                link.symlink_to(target)


def read_index(out: Path) -> dict[str, BuiltImage]:
    """The images of the last ``make images``, by name."""
    data = json.loads((out / "images.json").read_text())
    return {item["name"]: BuiltImage(**item) for item in data}
