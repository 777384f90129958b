"""The built images, unpacked once per session into runtime bundles that runc runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovereign_operator.images.build import BuiltImage, build_images
from sovereign_operator.images.container import Bundle, unpack

from .image_inspect import REPO_ROOT


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltImage]:
    """Both images, as `make images` builds them (a cache hit after `make images`)."""
    out = tmp_path_factory.mktemp("images")
    return {image.name: image for image in build_images(REPO_ROOT, out=out)}


def _unpacked(built: dict[str, BuiltImage], name: str, factory: pytest.TempPathFactory) -> Bundle:
    return unpack(Path(built[name].archive), factory.mktemp(name))


@pytest.fixture(scope="session")
def operator_image(
    built: dict[str, BuiltImage], tmp_path_factory: pytest.TempPathFactory
) -> Bundle:
    return _unpacked(built, "operator", tmp_path_factory)


@pytest.fixture(scope="session")
def runtime_image(built: dict[str, BuiltImage], tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return _unpacked(built, "runtime", tmp_path_factory)
