"""Where models and datasets come from, and how they reach a local folder.

Model URIs:   hf://org/name, s3://bucket/prefix, pvc://claim/path, models:/name/version,
              file:///abs/path, or a plain local path.
Dataset URIs: a local path, file://, pvc://claim/path, s3://bucket/key, https:// (or http://).

pvc://claim/path is the folder <SOVAI_PVC_ROOT>/<claim>/<path>; SOVAI_PVC_ROOT defaults to
/mnt/pvc, where the operator mounts each PersistentVolumeClaim under its own name.
S3 works with any S3-compatible store: in the operator's pods each bucket is reached at the
endpoint the SovereigntyPolicy declares for it (storage.py); boto3 reads the usual credential
variables. Downloads are cached under SOVAI_CACHE_DIR
(default ~/.cache/sovereign-ai), one folder per URI, guarded by a file lock so that workers on
one node download once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from .digest import file_sha256
from .storage import (
    MODEL_SOURCES,
    STORAGE,
    Role,
    RouteError,
    route_mlflow_artifacts,
    s3_client,
)

DEFAULT_PVC_ROOT = "/mnt/pvc"
COMPLETE_MARKER = ".sovai-complete"
# The files a causal LM needs; other files in a hub repo (original/ checkpoints, onnx, gguf)
# are skipped so a fetch does not pull several copies of the weights.
HF_ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.model",
    "*.txt",
    "*.jinja",
    "*.py",
    "tokenizer*",
    "README.md",
]


class SourceError(ValueError):
    """A URI that cannot be used, or a download that failed; names the field."""


@dataclass(frozen=True)
class Uri:
    """A parsed model or dataset URI."""

    scheme: str  # hf | s3 | pvc | mlflow | http | local
    raw: str
    location: str  # repo id, bucket/key, local path, or the URL itself


def pvc_root() -> Path:
    return Path(os.environ.get("SOVAI_PVC_ROOT", DEFAULT_PVC_ROOT))


def cache_root() -> Path:
    default = Path.home() / ".cache" / "sovereign-ai"
    return Path(os.environ.get("SOVAI_CACHE_DIR", str(default)))


def parse_uri(raw: str, field: str) -> Uri:
    """Classify `raw`; raises SourceError naming `field` for an unsupported scheme."""
    parsed = urlparse(raw)
    scheme = parsed.scheme.lower()
    if raw.startswith("models:/"):
        return Uri("mlflow", raw, raw)
    if scheme == "hf":
        repo = (parsed.netloc + parsed.path).strip("/")
        if repo.count("/") != 1:
            raise SourceError(f"{field}: expected hf://org/name, got {raw!r}")
        return Uri("hf", raw, repo)
    if scheme == "s3":
        if not parsed.netloc:
            raise SourceError(f"{field}: expected s3://bucket/key, got {raw!r}")
        return Uri("s3", raw, parsed.netloc + "/" + parsed.path.lstrip("/"))
    if scheme == "pvc":
        if not parsed.netloc:
            raise SourceError(f"{field}: expected pvc://claim/path, got {raw!r}")
        return Uri("pvc", raw, str(pvc_root() / parsed.netloc / parsed.path.lstrip("/")))
    if scheme == "file":
        return Uri("local", raw, unquote(parsed.path))
    if scheme in ("http", "https"):
        return Uri("http", raw, raw)
    if scheme == "" or len(scheme) == 1:  # a plain path (or a Windows drive letter)
        return Uri("local", raw, raw)
    raise SourceError(
        f"{field}: unsupported URI scheme {scheme!r} in {raw!r}; allowed: hf://, s3://, "
        "pvc://, models:/, file://, https:// or a local path"
    )


def _cache_dir(kind: str, uri: str, revision: str | None = None) -> Path:
    key = hashlib.sha256(f"{uri}@{revision or ''}".encode()).hexdigest()[:24]
    return cache_root() / kind / key


def _s3(bucket: str, role: Role, field: str = "") -> Any:
    """The client of ``bucket``'s declared endpoint; an undeclared bucket is a SourceError."""
    try:
        return s3_client(bucket, role)
    except RouteError as error:
        raise SourceError(f"{field}: {error}" if field else str(error)) from None


def _split_s3(location: str) -> tuple[str, str]:
    bucket, _, key = location.partition("/")
    return bucket, key


def s3_listing(uri: Uri) -> list[dict[str, Any]]:
    """Objects under an s3:// prefix: key, size and ETag, sorted by key."""
    bucket, prefix = _split_s3(uri.location)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    client = _s3(bucket, MODEL_SOURCES)
    objects: list[dict[str, Any]] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):
                objects.append({"key": obj["Key"], "size": obj["Size"], "etag": obj["ETag"]})
    return sorted(objects, key=lambda o: o["key"])


def download_s3_prefix(uri: Uri, dest: Path) -> None:
    bucket, prefix = _split_s3(uri.location)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    objects = s3_listing(uri)
    if not objects:
        raise SourceError(f"no objects under {uri.raw}")
    client = _s3(bucket, MODEL_SOURCES)
    for obj in objects:
        target = dest / obj["key"][len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, obj["key"], str(target))


def upload_folder_s3(folder: Path, raw_uri: str) -> None:
    """Upload every file under `folder` to the s3:// prefix `raw_uri`."""
    uri = parse_uri(raw_uri, "output.uri")
    bucket, prefix = _split_s3(uri.location)
    client = _s3(bucket, STORAGE, "output.uri")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = "/".join(filter(None, [prefix.rstrip("/"), path.relative_to(folder).as_posix()]))
        client.upload_file(str(path), bucket, key)


def _locked_fill(target: Path, fill: Any) -> Path:
    """Run fill(tmp_dir) once per target folder, atomically, under a file lock."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / COMPLETE_MARKER).exists():
            return target
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp-"))
        try:
            fill(tmp)
            (tmp / COMPLETE_MARKER).write_text("ok\n")
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def hf_snapshot(uri: Uri, revision: str | None) -> Path:
    # huggingface_hub honours HF_HUB_OFFLINE (use the local cache only), HF_HOME/HF_HUB_CACHE
    # and HF_ENDPOINT (an in-house mirror) by itself.
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id=uri.location, revision=revision, allow_patterns=HF_ALLOW_PATTERNS
            )
        )
    except Exception as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        hint = " (HF_HUB_OFFLINE is set: the model must already be in the local cache)"
        raise SourceError(
            f"baseModel.uri: cannot load {uri.raw} at revision {revision or 'main'}: "
            f"{exc}{hint if offline else ''}"
        ) from exc


def mlflow_download(uri: Uri, dest: Path) -> None:
    import mlflow
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    # MLflow's own resolution of models:/name/version and models:/name@alias to where the
    # version's files are; MLflow leaves it unannotated, so its type is stated here.
    underlying_uri: Callable[[str], str] = ModelsArtifactRepository.get_underlying_uri
    try:
        route_mlflow_artifacts(underlying_uri(uri.raw))
    except RouteError as error:
        raise SourceError(f"{uri.raw}: its artifacts are at {error}") from None
    mlflow.artifacts.download_artifacts(artifact_uri=uri.raw, dst_path=str(dest))


def resolved_revision(raw: str, requested: str | None, folder: Path) -> str:
    """The revision a model folder really holds, as the model card and MLflow tags both
    record it: for a hub model, the commit its snapshot folder is named after (a branch or tag
    moves; the commit does not); otherwise the revision asked for, or "" when none was."""
    if parse_uri(raw, "baseModel.uri").scheme == "hf" and folder.parent.name == "snapshots":
        return folder.name
    return requested or ""


def model_dir(raw: str, revision: str | None = None, field: str = "baseModel.uri") -> Path:
    """A local folder holding the model (and usually its tokenizer) named by `raw`.

    Local and PVC paths are used in place; hub, S3 and MLflow sources are downloaded once into
    the cache.
    """
    uri = parse_uri(raw, field)
    if uri.scheme == "http":
        raise SourceError(f"{field}: models cannot be loaded from http(s) URLs: {raw!r}")
    if uri.scheme in ("local", "pvc"):
        path = Path(uri.location)
        if not path.is_dir():
            raise SourceError(f"{field}: {raw!r} is not a folder ({path} does not exist)")
        return path
    if uri.scheme == "hf":
        return hf_snapshot(uri, revision)
    if uri.scheme == "s3":
        return _locked_fill(_cache_dir("models", raw), lambda tmp: download_s3_prefix(uri, tmp))
    return _locked_fill(_cache_dir("models", raw), lambda tmp: mlflow_download(uri, tmp))


def dataset_file(raw: str, field: str) -> Path:
    """A local copy of the JSONL dataset named by `raw` (downloaded anew for s3/https)."""
    uri = parse_uri(raw, field)
    if uri.scheme in ("local", "pvc"):
        path = Path(uri.location)
        if not path.is_file():
            raise SourceError(f"{field}: {raw!r} is not a file ({path} does not exist)")
        return path
    if uri.scheme not in ("s3", "http"):
        raise SourceError(
            f"{field}: datasets are read from a local path, pvc://, s3:// or https://, not {raw!r}"
        )
    target = _cache_dir("datasets", raw) / "data.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix="download-")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if uri.scheme == "s3":
            bucket, key = _split_s3(uri.location)
            _s3(bucket, STORAGE, field).download_file(bucket, key, str(tmp))
        else:
            _http_download(raw, tmp, field)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _http_download(url: str, dest: Path, field: str) -> None:
    import requests

    try:
        with requests.get(url, stream=True, timeout=60) as resp:
            resp.raise_for_status()
            with dest.open("wb") as fh:
                for chunk in resp.iter_content(1 << 20):
                    fh.write(chunk)
    except requests.RequestException as exc:
        raise SourceError(f"{field}: download of {url} failed: {exc}") from exc


def checked_dataset(raw: str, field: str, expected_sha256: str | None) -> tuple[Path, str]:
    """Fetch a dataset and verify its sha256; returns (local path, actual sha256).

    Raises SourceError naming dataset.sha256 with the expected and actual digests on mismatch.
    """
    path = dataset_file(raw, field)
    actual = file_sha256(path)
    if expected_sha256 is not None and actual != expected_sha256:
        raise SourceError(
            f"dataset.sha256 mismatch for {field} {raw}: expected {expected_sha256}, "
            f"actual {actual}. The file changed or the wrong file was given; fix "
            "dataset.sha256 or the dataset."
        )
    return path, actual
