"""Run a command in a built image, as a container runtime would: umoci unpacks the OCI archive
into a runtime bundle (the image's own user, environment, working directory and entrypoint in its
``config.json``) and runc runs it, with no network, a fresh ``/tmp`` and, by default, a read-only
root filesystem.

This is how ``make images`` output is inspected without a container engine; the local cluster's
node runs the same archives through containerd.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .build import ImageBuildError, run

REF_ANNOTATION = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Bundle:
    """An unpacked image: a root filesystem and the runtime configuration umoci made for it."""

    path: Path
    config: dict[str, Any]

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    def run(
        self,
        args: Sequence[str] = (),
        entrypoint: Sequence[str] | None = None,
        read_only: bool = True,
        timeout: float = 120,
        uid: int | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``entrypoint + args`` (the image's entrypoint unless given) and wait for it.

        ``args`` replace the image's CMD, as ``docker run IMAGE ARGS`` does; ``uid`` replaces
        the image's user (as a pod's ``runAsUser`` does).
        """
        config = json.loads(json.dumps(self.config))
        image = self.image_config
        process = config["process"]
        if entrypoint is None:
            entrypoint = image.get("Entrypoint") or []
            args = args or image.get("Cmd") or []
        process["args"] = [*entrypoint, *args]
        process["terminal"] = False
        if uid is not None:
            process["user"] = {"uid": uid, "gid": uid}
        config["root"]["readonly"] = read_only
        # A fresh /tmp, as the chart's emptyDir gives the operator and a pod's writable layer
        # gives the runtime (torch and Ray need a temporary directory even for --help).
        config["mounts"].append(
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777", "size=256m"],
            }
        )
        (self.path / "config.json").write_text(json.dumps(config))
        state = self.path.parent / "runc-state"
        return subprocess.run(
            ["runc", "--root", str(state), "run", "--bundle", str(self.path),
             f"sovai-{uuid.uuid4().hex[:12]}"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )  # fmt: skip

    @property
    def image_config(self) -> dict[str, Any]:
        """The image's own configuration (User, Entrypoint, Cmd, Env, WorkingDir)."""
        config: dict[str, Any] = json.loads((self.path / "image-config.json").read_text())
        return config


def unpack(archive: Path, dest: Path) -> Bundle:
    """Unpack an OCI archive (as ``make images`` writes them) into a runtime bundle in ``dest``."""
    if shutil.which("umoci") is None or shutil.which("runc") is None:
        raise ImageBuildError("umoci and runc are needed: run hack/install-packages.sh")
    layout = dest / "layout"
    layout.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="tar")
    index = json.loads((layout / "index.json").read_text())
    descriptor = index["manifests"][0]
    reference = descriptor.get("annotations", {}).get(REF_ANNOTATION)
    if not reference:
        raise ImageBuildError(f"{archive} names no image ({REF_ANNOTATION})")
    bundle = dest / "bundle"
    run(["umoci", "unpack", "--image", f"{layout}:{reference}", str(bundle)], "umoci unpack")
    manifest = _blob(layout, descriptor["digest"])
    image_config = _blob(layout, manifest["config"]["digest"]).get("config", {})
    (bundle / "image-config.json").write_text(json.dumps(image_config))
    shutil.rmtree(layout)  # the bundle holds everything from here on
    return Bundle(bundle, json.loads((bundle / "config.json").read_text()))


def _blob(layout: Path, digest: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((layout / "blobs" / digest.replace(":", "/")).read_text())
    return data
