"""The Go wrapper modules build the versions that hack/versions.env names (its versions are the
cache keys of the binaries, so a drift would keep a stale binary cached under the new name)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sovereign_operator.devcluster.binaries import read_versions

REPO = Path(__file__).resolve().parents[2]
WRAPPERS = [
    ("kube", "k8s.io/kubernetes", "KUBERNETES_VERSION"),
    ("etcd", "go.etcd.io/etcd/server/v3", "ETCD_VERSION"),
    ("coredns", "github.com/coredns/coredns", "COREDNS_VERSION"),
    ("argocd-health", "github.com/yuin/gopher-lua", "GOPHER_LUA_VERSION"),
    ("seaweedfs", "github.com/seaweedfs/seaweedfs", "SEAWEEDFS_VERSION"),
]


@pytest.mark.parametrize(("wrapper", "module", "key"), WRAPPERS, ids=[w[0] for w in WRAPPERS])
def test_wrapper_requires_the_version_of_versions_env(wrapper: str, module: str, key: str) -> None:
    go_mod = (REPO / "hack" / "go" / wrapper / "go.mod").read_text()
    required = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(\S+)", go_mod, re.MULTILINE)
    assert required is not None, f"hack/go/{wrapper}/go.mod does not require {module}"
    assert required.group(1) == read_versions(REPO)[key]
