"""Keep buildah's storage and the image cache from filling the disk.

Each runtime build leaves gigabytes behind: the image it replaced, the intermediate images of
``--layers`` that no tagged image descends from any more, and, when a build is killed, its
working container and its staging folder. A CI machine that builds on every change runs out
of disk within a few builds (it did, committing the runtime's torch layer). So: one build at a
time, stale leftovers removed before it, a free-space check that fails with numbers instead of
an ENOSPC in the middle of a layer, and untagged images that are no one's layer cache removed
after it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

GIB = 1 << 30
DEFAULT_GRAPH_ROOT = Path("/var/lib/containers/storage")


class StorageError(RuntimeError):
    """Too little disk for a build, or another build holding the cache."""


def _buildah_json(*argv: str) -> object:
    result = subprocess.run(
        ["buildah", *argv], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    if result.returncode != 0:
        raise StorageError(f"buildah {' '.join(argv)} failed: {result.stderr.strip()}")
    return json.loads(result.stdout or "null")


def graph_root() -> Path:
    """Where buildah keeps its layers (``buildah info``'s store.GraphRoot)."""
    info = _buildah_json("info")
    if isinstance(info, dict):
        store = info.get("store")
        if isinstance(store, dict) and isinstance(store.get("GraphRoot"), str):
            return Path(store["GraphRoot"])
    return DEFAULT_GRAPH_ROOT


def require_free_space(name: str, needed_gib: float, *paths: Path) -> None:
    """Fail before a build that would run out of disk, naming the folder and both figures."""
    for path in paths:
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        free = shutil.disk_usage(existing).free / GIB
        if free < needed_gib:
            raise StorageError(
                f"building {name} needs about {needed_gib:.0f} GiB free under {path}, and "
                f"{free:.1f} GiB is free: free some disk (`buildah rmi --prune` removes images "
                "no tag names) and run `make images` again"
            )


@contextlib.contextmanager
def exclusive_build(cache: Path) -> Iterator[None]:
    """Hold the cache for one build at a time; two builds of the runtime at once would need
    twice the disk and race for the same tag."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another image build holds %s; waiting for it", cache)
            fcntl.flock(lock, fcntl.LOCK_EX)
        # With the lock held, any staging folder is a build that was killed.
        for stale in cache.glob(".*-*"):
            if stale.is_dir():
                log.info("removing %s, left by an interrupted build", stale.name)
                shutil.rmtree(stale, ignore_errors=True)
        yield


def _images() -> list[dict[str, object]]:
    listed = _buildah_json("images", "--all", "--json")
    return [item for item in listed if isinstance(item, dict)] if isinstance(listed, list) else []


def _diff_ids(image_id: str) -> tuple[str, ...]:
    inspected = _buildah_json("inspect", "--type", "image", image_id)
    if not isinstance(inspected, dict):
        return ()
    rootfs = inspected.get("OCIv1", {}).get("rootfs", {})
    return tuple(rootfs.get("diff_ids") or ())


def unreferenced(images: Sequence[tuple[str, bool, tuple[str, ...]]]) -> list[str]:
    """The ids of untagged images whose layers are not a prefix of any tagged image's layers.

    Each item is (id, tagged, layer diff ids). An untagged image whose layers a tagged image
    starts with is an intermediate step of that image's build: the layer cache that lets a
    code-only change skip the torch layer. Any other untagged image is garbage.
    """
    tagged = [layers for _, is_tagged, layers in images if is_tagged]
    return [
        image_id
        for image_id, is_tagged, layers in images
        if not is_tagged and not any(chain[: len(layers)] == layers for chain in tagged)
    ]


def remove_build_containers(own_images: Sequence[str]) -> None:
    """Working containers that a killed ``buildah build`` left on images of ours."""
    listed = _buildah_json("containers", "--json")
    for container in listed if isinstance(listed, list) else []:
        image = str(container.get("imagename") or "")
        name = str(container.get("containername") or "")
        if "working-container" in name and (not image or image in own_images):
            log.info("removing build container %s (%s)", name, image or "untagged image")
            subprocess.run(["buildah", "rm", str(container["id"])], capture_output=True,
                           check=False)  # fmt: skip


def prune_images() -> int:
    """Remove untagged images that are no tagged image's build steps; returns how many."""
    listed = [
        (str(image["id"]), bool(image.get("names")), _diff_ids(str(image["id"])))
        for image in _images()
    ]
    garbage = unreferenced(listed)
    for image_id in garbage:
        subprocess.run(["buildah", "rmi", "--force", image_id], capture_output=True, check=False)
    if garbage:
        log.info("removed %d untagged images that no tagged image is built from", len(garbage))
    return len(garbage)
