"""`python -m sovereign_training fetch --uri URI --dest DIR`: put a model into a folder, once.

The serving init container runs this. It copies the model named by URI (the sources in
sources.py) into DEST and writes DEST/.sovai-digest, a JSON record of the URI, a fingerprint of
the source and the digest (digest.model_digest) of what it wrote. On the next start, when the
record's URI and fingerprint match the source and DEST still hashes to the recorded digest,
nothing is copied again. It prints one line, `SOVAI_FETCH {"uri":..,"digest":..,"skipped":..}`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .digest import MARKER_PREFIX, model_digest
from .sources import (
    SourceError,
    Uri,
    download_s3_prefix,
    hf_snapshot,
    mlflow_download,
    parse_uri,
    s3_listing,
)

RECORD_NAME = ".sovai-digest"
DIGEST_TAG = "sovai.model_digest"


@dataclass(frozen=True)
class FetchResult:
    uri: str
    dest: Path
    digest: str
    skipped: bool

    def line(self) -> str:
        body = {"uri": self.uri, "dest": str(self.dest), "digest": self.digest}
        return "SOVAI_FETCH " + json.dumps(body | {"skipped": self.skipped}, separators=(",", ":"))


def _mlflow_fingerprint(uri: Uri) -> str:
    """The version's recorded digest, else its immutable source + run id."""
    from mlflow import MlflowClient

    name, _, version = uri.raw.removeprefix("models:/").partition("/")
    if not version or not version.isdigit():
        raise SourceError(f"--uri: expected models:/name/version with a version number: {uri.raw}")
    mv = MlflowClient().get_model_version(name, version)
    return mv.tags.get(DIGEST_TAG) or f"{mv.source}@{mv.run_id}"


def source_fingerprint(uri: Uri, revision: str | None) -> str | None:
    """Something that changes whenever the source's contents change, cheap to get; None when
    only downloading tells (then the copy is always refreshed)."""
    if uri.scheme in ("local", "pvc"):
        return model_digest(uri.location)
    if uri.scheme == "mlflow":
        return _mlflow_fingerprint(uri)
    if uri.scheme == "s3":
        listing = json.dumps(s3_listing(uri), sort_keys=True).encode()
        return "s3-listing:" + hashlib.sha256(listing).hexdigest()
    if uri.scheme == "hf":
        # The snapshot folder is named by the resolved commit; with HF_HUB_OFFLINE it comes from
        # the local cache, otherwise the hub tells the commit for the revision.
        return "hf:" + hf_snapshot(uri, revision).name
    return None


def _fill(uri: Uri, revision: str | None, target: Path) -> None:
    if uri.scheme in ("local", "pvc"):
        shutil.copytree(uri.location, target, dirs_exist_ok=True)
    elif uri.scheme == "hf":
        shutil.copytree(hf_snapshot(uri, revision), target, dirs_exist_ok=True)
    elif uri.scheme == "s3":
        download_s3_prefix(uri, target)
    elif uri.scheme == "mlflow":
        mlflow_download(uri, target)
    else:
        raise SourceError(f"--uri: models cannot be fetched from {uri.raw!r}")


def _read_record(dest: Path) -> dict[str, str] | None:
    try:
        record = json.loads((dest / RECORD_NAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def fetch_model(raw_uri: str, dest: str | Path, revision: str | None = None) -> FetchResult:
    """Copy the model at `raw_uri` into `dest` unless `dest` already holds it (see module doc)."""
    uri = parse_uri(raw_uri, "--uri")
    if uri.scheme == "http":
        raise SourceError(f"--uri: models cannot be fetched from http(s) URLs: {raw_uri!r}")
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = source_fingerprint(uri, revision)
    record = _read_record(out)
    if (
        record is not None
        and fingerprint is not None
        and record.get("uri") == raw_uri
        and record.get("fingerprint") == fingerprint
    ):
        try:
            current = model_digest(out)
        except FileNotFoundError:
            current = ""
        if current == record.get("digest"):
            return FetchResult(raw_uri, out, current, skipped=True)
    # Download beside the contents (dest may be a mount point that cannot be replaced), then
    # swap: old files out, new files in.
    staging = Path(tempfile.mkdtemp(dir=out, prefix=MARKER_PREFIX + "staging-"))
    try:
        _fill(uri, revision, staging)
        for child in out.iterdir():
            if child == staging:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        for child in staging.iterdir():
            if child.name.startswith(MARKER_PREFIX):
                continue
            child.rename(out / child.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    digest = model_digest(out)
    body = {"uri": raw_uri, "fingerprint": fingerprint or "", "digest": digest}
    (out / RECORD_NAME).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return FetchResult(raw_uri, out, digest, skipped=False)
