"""Reading a built image: its lock, the packages in its environment, its SBOM."""

from __future__ import annotations

import json
import re
from pathlib import Path

from packaging.utils import canonicalize_name

from sovereign_operator.images.build import BuiltImage
from sovereign_operator.images.container import Bundle

REPO_ROOT = Path(__file__).resolve().parents[2]
SITE_PACKAGES = "opt/venv/lib/python3.11/site-packages"
LOCK_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ \\]+)", re.MULTILINE)


def locked(image: str) -> dict[str, str]:
    """name -> version pinned in images/IMAGE/requirements.lock."""
    text = (REPO_ROOT / "images" / image / "requirements.lock").read_text()
    return {canonicalize_name(name): version for name, version in LOCK_PIN.findall(text)}


def installed(bundle: Bundle) -> dict[str, str]:
    """name -> version of every distribution in the image's virtual environment."""
    found: dict[str, str] = {}
    for info in (bundle.rootfs / SITE_PACKAGES).glob("*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        found[canonicalize_name(name)] = version
    return found


def sbom_components(image: BuiltImage) -> dict[str, str]:
    """name -> version of every component in the image's CycloneDX SBOM."""
    assert image.sbom is not None
    document = json.loads(Path(image.sbom).read_text())
    assert document["bomFormat"] == "CycloneDX"
    return {c["name"].lower(): c.get("version", "") for c in document["components"]}
