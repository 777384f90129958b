"""The real node's image store: shared through the cache by one node at a time, its own
otherwise; an image already in it is found by the manifest digest `make images` recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sovereign_operator.devcluster.node_config import NodeLayout, containerd_config
from sovereign_operator.devcluster.realnode import ImageStore, image_store_root, manifest_digest


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # .ci/run turns the shared store off for the whole run; these tests set it themselves.
    monkeypatch.delenv("SOVAI_NODE_IMAGE_CACHE", raising=False)
    return tmp_path / "cache"


def test_one_node_at_a_time_gets_the_shared_store(tmp_path: Path, cache: Path) -> None:
    first = ImageStore(tmp_path / "node-1" / "root")
    second = ImageStore(tmp_path / "node-2" / "root")
    assert first.shared
    assert first.path == cache / "sovereign-ai" / "node-store" / "containerd"
    assert first.path.parent == image_store_root()
    assert not second.shared
    assert second.path == tmp_path / "node-2" / "root"
    second.path.mkdir(parents=True)
    second.release()  # a node's own store goes with it
    assert not second.path.exists()
    first.path.mkdir(parents=True)
    first.release()  # the shared one stays for the next start, unlocked
    assert first.path.is_dir()
    third = ImageStore(tmp_path / "node-3" / "root")
    assert third.shared
    third.release()


def test_manifest_digest_comes_from_the_images_metadata(tmp_path: Path) -> None:
    archive = tmp_path / "runtime" / "image.oci.tar"
    archive.parent.mkdir()
    archive.write_bytes(b"")
    assert manifest_digest(archive) is None  # no metadata: imported every time
    (archive.parent / "image.json").write_text(json.dumps({"manifest_digest": "sha256:ab"}))
    assert manifest_digest(archive) == "sha256:ab"
    (archive.parent / "image.json").write_text("{not json")
    assert manifest_digest(archive) is None


def test_containerd_root_is_the_store_when_given(tmp_path: Path) -> None:
    import ipaddress

    layout = NodeLayout(
        tmp_path, "n", "br0", ipaddress.IPv4Network("10.213.5.0/24"), "10.96.0.0/16"
    )
    assert containerd_config(layout, "pause")["root"] == str(tmp_path / "containerd" / "root")
    store = tmp_path / "cache" / "containerd"
    config = containerd_config(layout, "pause", store)
    assert config["root"] == str(store)
    assert config["state"] == str(tmp_path / "containerd" / "state")


def test_a_machine_that_runs_once_keeps_no_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOVAI_NODE_IMAGE_CACHE", "0")
    store = ImageStore(tmp_path / "node" / "root")
    assert not store.shared
    assert store.path == tmp_path / "node" / "root"
