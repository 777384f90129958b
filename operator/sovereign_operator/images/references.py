"""Names of the project's container images: one source for the settings, the chart and the build.

The chart's defaults (``image.repository``, ``config.runtimeImage``) and the operator's
(``SOVAI_RUNTIME_IMAGE``) are written out where users read them; a unit test checks that they
agree with these names, so an image that ``make images`` builds is the image they run.
"""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "sovereign-ai-operator"
REGISTRY = "registry.sovereign-ai.eu/sovereign-ai"
VERSION = metadata.version(DISTRIBUTION)

OPERATOR_REPOSITORY = f"{REGISTRY}/operator"
RUNTIME_REPOSITORY = f"{REGISTRY}/runtime"
OPERATOR_IMAGE = f"{OPERATOR_REPOSITORY}:{VERSION}"
RUNTIME_IMAGE = f"{RUNTIME_REPOSITORY}:{VERSION}"

# Built here only, never pushed: the Debian root filesystem and the common base of both images.
DEBIAN_IMAGE = "localhost/sovereign-ai/debian:bookworm"
BASE_IMAGE = f"localhost/sovereign-ai/base:{VERSION}"
# The real node's pod sandbox image (containerd's pinned sandbox image in the local cluster).
PAUSE_IMAGE = f"localhost/sovereign-ai/pause:{VERSION}"

# What a real node of the local cluster imports: the sandbox image, the operator, and the
# runtime that the Ray pods, MLflow and the serving pods run (names of images.DEFINITIONS).
NODE_IMAGES = ("pause", "operator", "runtime")
