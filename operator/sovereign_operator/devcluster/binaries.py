"""Locate (or build) the control-plane binaries that the local cluster runs.

Lookup order for each binary:
1. ``$KUBEBUILDER_ASSETS/<name>`` when that folder holds it (nothing is built);
2. the per-version cache written by ``hack/build-control-plane.sh``:
   ``${XDG_CACHE_HOME:-~/.cache}/sovereign-ai/bin/<component>-<version>/<name>``, or
   ``<component>-<version>-r<recipe>`` when versions.env sets a recipe revision for that version
   (``HELM_RECIPE`` beside ``HELM_VERSION``); a component built from this repository's own Go
   source (``OWN_SOURCE``) also carries ``-<digest of that source>``.

Versions come from ``hack/versions.env``, the same file the build script reads, so the two can
never disagree.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# binary name -> (component, key of its version in hack/versions.env)
COMPONENTS: dict[str, tuple[str, str]] = {
    "etcd": ("etcd", "ETCD_VERSION"),
    "kube-apiserver": ("kubernetes", "KUBERNETES_VERSION"),
    "kube-controller-manager": ("kubernetes", "KUBERNETES_VERSION"),
    "kube-scheduler": ("kubernetes", "KUBERNETES_VERSION"),
    "kubectl": ("kubernetes", "KUBERNETES_VERSION"),
    "kwok": ("kwok", "KWOK_VERSION"),
    "helm": ("helm", "HELM_VERSION"),
    "kuberay-operator": ("kuberay", "KUBERAY_VERSION"),
    # The cluster's S3-compatible store (SeaweedFS), started by LocalCluster(s3=True).
    "weed": ("seaweedfs", "SEAWEEDFS_VERSION"),
    # Queueing and GPU quota, started by LocalCluster(kueue=True).
    "kueue": ("kueue", "KUEUE_VERSION"),
}
# The real node's binaries: needed only by a cluster that starts one.
NODE_COMPONENTS: dict[str, tuple[str, str]] = {
    "kubelet": ("kubernetes-node", "KUBERNETES_VERSION"),
    "kube-proxy": ("kubernetes-node", "KUBERNETES_VERSION"),
    "containerd": ("containerd", "CONTAINERD_VERSION"),
    "containerd-shim-runc-v2": ("containerd", "CONTAINERD_VERSION"),
    "ctr": ("containerd", "CONTAINERD_VERSION"),
    "coredns": ("coredns-cluster", "COREDNS_VERSION"),
}
# Built by the same script, used by `make images` only: not needed to start a cluster.
TOOLS: dict[str, tuple[str, str]] = {
    "syft": ("syft", "SYFT_VERSION"),
    # The manifest linter of the unit tests.
    "kube-score": ("kube-score", "KUBE_SCORE_VERSION"),
    # Runs the chart's Argo CD health scripts as Argo CD does (tests/unit/test_helm_argocd.py).
    "argocd-health": ("argocd-health", "GOPHER_LUA_VERSION"),
    # --- Argo CD (devcluster/argocd.py, docs/gitops.md): started only by the GitOps tests ---
    "argocd": ("argocd", "ARGOCD_VERSION"),
}
# Components built from this repository's own Go source (hack/go/<folder>): their cache folder
# also carries a digest of that source, so that an edit is rebuilt instead of found cached.
OWN_SOURCE: dict[str, str] = {"argocd-health": "argocd-health"}


class BinariesUnavailableError(RuntimeError):
    """The control-plane binaries are neither present nor buildable here."""


def repo_root() -> Path | None:
    """The source checkout holding ``hack/``, or None for an installed wheel."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "hack" / "versions.env").is_file():
            return parent
    return None


def read_versions(root: Path) -> dict[str, str]:
    versions: dict[str, str] = {}
    for line in (root / "hack" / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip()
    return versions


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sovereign-ai" / "bin"


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of every control-plane binary."""

    paths: dict[str, Path]

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]


def _candidates(name: str, versions: dict[str, str]) -> list[Path]:
    found: list[Path] = []
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        found.append(Path(assets) / name)
    component, key = {**COMPONENTS, **NODE_COMPONENTS, **TOOLS}[name]
    if key in versions:
        found.append(cache_dir() / cache_folder(component, key, versions) / name)
    return found


def cache_folder(component: str, key: str, versions: dict[str, str]) -> str:
    """The cache folder's name, as hack/build-control-plane.sh writes it.

    A ``<NAME>_RECIPE`` beside ``<NAME>_VERSION`` is the revision of that component's build
    recipe: it is part of the folder, so that a changed recipe is rebuilt, not found cached.
    """
    folder = f"{component}-{versions[key]}"
    root = repo_root()
    if component in OWN_SOURCE and root is not None:
        folder += "-" + source_digest(root / "hack" / "go" / OWN_SOURCE[component])
    recipe = versions.get(key.removesuffix("_VERSION") + "_RECIPE")
    return f"{folder}-r{recipe}" if recipe else folder


def source_digest(folder: Path) -> str:
    """The first 12 hex digits of the sha256 of the folder's files (not its subfolders) in
    name order, as ``argocd_health_key`` in hack/build-control-plane.sh computes it."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir(), key=lambda p: p.name.encode()):
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def find_binaries(node: bool = False) -> tuple[Binaries, list[str]]:
    """Return the binaries found (with the real node's when ``node``), and those missing."""
    root = repo_root()
    versions = read_versions(root) if root else {}
    paths: dict[str, Path] = {}
    missing: list[str] = []
    for name in [*COMPONENTS, *(NODE_COMPONENTS if node else ())]:
        hit = next((p for p in _candidates(name, versions) if os.access(p, os.X_OK)), None)
        if hit is None:
            missing.append(name)
        else:
            paths[name] = hit
    return Binaries(paths), missing


def find_tool(name: str) -> Path | None:
    """A binary of TOOLS (or COMPONENTS), from KUBEBUILDER_ASSETS or the per-version cache."""
    root = repo_root()
    versions = read_versions(root) if root else {}
    return next((p for p in _candidates(name, versions) if os.access(p, os.X_OK)), None)


def ensure_binaries(build: bool = True, node: bool = False) -> Binaries:
    """Find every binary, building the missing ones with ``hack/build-control-plane.sh``.

    Raises BinariesUnavailableError with instructions when they cannot be had.
    """
    binaries, missing = find_binaries(node)
    if not missing:
        return binaries
    root = repo_root()
    if not build or root is None:
        raise BinariesUnavailableError(
            f"control-plane binaries missing: {', '.join(missing)}. Set KUBEBUILDER_ASSETS to a "
            "folder that holds them, or run `make control-plane` in a source checkout "
            "(needs Go >= 1.26)."
        )
    script = root / "hack" / "build-control-plane.sh"
    # Progress goes straight to the user's terminal: a cold build takes many minutes.
    result = subprocess.run([str(script)], stdout=subprocess.DEVNULL, stderr=sys.stderr)
    if result.returncode != 0:
        raise BinariesUnavailableError(
            f"{script} failed with exit code {result.returncode}; see its output above"
        )
    binaries, missing = find_binaries(node)
    if missing:
        raise BinariesUnavailableError(f"still missing after the build: {', '.join(missing)}")
    return binaries
