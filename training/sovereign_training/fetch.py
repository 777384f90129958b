"""`python -m sovereign_training fetch --uri URI --dest DIR`: put a model into a folder, once.

The serving init container runs this. It copies the model named by URI (the sources in
sources.py) into DEST and writes DEST/.sovai-digest, a JSON record of the URI, a fingerprint of
the source and the digest (digest.model_digest) of what it wrote. On the next start, when the
record's URI and fingerprint match the source and DEST still hashes to the recorded digest,
nothing is copied again. It prints one line, `SOVAI_FETCH {"uri":..,"digest":..,"skipped":..}`.

It refuses a model that is not the one expected (FetchRefused; the CLI exits 3), whether it was
just downloaded or found in the folder, so a cache cannot launder a tampered copy:
- `--expect-digest`: what the trainer recorded; the digest of the folder must equal it.
- `--expect-job-uid`: the FineTuneJob's uid; the models:/ version's `sovai.job.uid` tag must
  equal it, and its `sovai.model_digest` tag must equal `--expect-digest` when both are known.
- Without expectations a models:/ version's own `sovai.model_digest` tag, when it has one, is
  the digest the folder must have.
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
JOB_UID_TAG = "sovai.job.uid"  # as tracking.JOB_UID_TAG; not imported, to keep fetch light
# Why a model is refused; the operator turns them into ModelVerified=False reasons.
DIGEST_MISMATCH = "DigestMismatch"
PROVENANCE_MISMATCH = "ProvenanceMismatch"


class FetchRefused(Exception):
    """The model is not the one expected and must not be served."""

    def __init__(self, uri: str, reason: str, message: str, expected: str, actual: str) -> None:
        super().__init__(message)
        self.uri, self.reason, self.expected, self.actual = uri, reason, expected, actual

    def record(self) -> str:
        """One JSON line for the termination log: uri, reason, error, expected, actual."""
        body = {
            "uri": self.uri,
            "reason": self.reason,
            "error": str(self),
            "expected": self.expected,
            "actual": self.actual,
        }
        return json.dumps(body, separators=(",", ":"))


@dataclass(frozen=True)
class FetchResult:
    uri: str
    dest: Path
    digest: str
    skipped: bool
    fingerprint: str = ""
    verified_digest: str | None = None  # the expectation the digest was checked against
    verified_job_uid: str | None = None  # the job uid the version's tag was checked against

    def line(self) -> str:
        body = {"uri": self.uri, "dest": str(self.dest), "digest": self.digest}
        return "SOVAI_FETCH " + json.dumps(body | {"skipped": self.skipped}, separators=(",", ":"))

    def record(self) -> str:
        """One JSON line for the termination log: the folder's record and what was checked."""
        body = {"uri": self.uri, "fingerprint": self.fingerprint, "digest": self.digest}
        if self.verified_digest:
            body["expectedDigest"] = self.verified_digest
        if self.verified_job_uid:
            body["jobUid"] = self.verified_job_uid
        return json.dumps(body, separators=(",", ":"))


@dataclass(frozen=True)
class _Version:
    """The tags of a models:/ version that fetch reads."""

    fingerprint: str
    digest_tag: str | None
    job_uid_tag: str | None


def _mlflow_version(uri: Uri) -> _Version:
    from mlflow import MlflowClient

    name, _, version = uri.raw.removeprefix("models:/").partition("/")
    if not version or not version.isdigit():
        raise SourceError(f"--uri: expected models:/name/version with a version number: {uri.raw}")
    mv = MlflowClient().get_model_version(name, version)
    tags = mv.tags or {}
    # The version's recorded digest, else its immutable source + run id.
    fingerprint = tags.get(DIGEST_TAG) or f"{mv.source}@{mv.run_id}"
    return _Version(fingerprint, tags.get(DIGEST_TAG), tags.get(JOB_UID_TAG))


def source_fingerprint(uri: Uri, revision: str | None) -> str | None:
    """Something that changes whenever the source's contents change, cheap to get; None when
    only downloading tells (then the copy is always refreshed)."""
    if uri.scheme in ("local", "pvc"):
        return model_digest(uri.location)
    if uri.scheme == "mlflow":
        return _mlflow_version(uri).fingerprint
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


def _expected_digest(
    uri: Uri, version: _Version | None, expect_digest: str | None, expect_job_uid: str | None
) -> str | None:
    """The digest the folder must have; refuses a version whose tags are not the job's."""
    raw = uri.raw
    if version is None:
        if expect_job_uid:
            raise FetchRefused(
                raw,
                PROVENANCE_MISMATCH,
                f"{raw}: only a models:/ version carries a FineTuneJob's uid "
                f"({expect_job_uid}) to check",
                expect_job_uid,
                "",
            )
        return expect_digest
    if expect_job_uid and version.job_uid_tag != expect_job_uid:
        raise FetchRefused(
            raw,
            PROVENANCE_MISMATCH,
            f"{raw}: MLflow tag {JOB_UID_TAG} is {version.job_uid_tag or 'missing'}; "
            f"expected the FineTuneJob's uid {expect_job_uid}",
            expect_job_uid,
            version.job_uid_tag or "",
        )
    if expect_digest and version.digest_tag != expect_digest:
        raise FetchRefused(
            raw,
            PROVENANCE_MISMATCH,
            f"{raw}: MLflow tag {DIGEST_TAG} is {version.digest_tag or 'missing'}; "
            f"expected the digest the trainer recorded, {expect_digest}",
            expect_digest,
            version.digest_tag or "",
        )
    return expect_digest or version.digest_tag


def fetch_model(
    raw_uri: str,
    dest: str | Path,
    revision: str | None = None,
    *,
    expect_digest: str | None = None,
    expect_job_uid: str | None = None,
) -> FetchResult:
    """Copy the model at `raw_uri` into `dest` unless `dest` already holds it, and check it
    (see module doc). Raises FetchRefused when it is not the model expected."""
    uri = parse_uri(raw_uri, "--uri")
    if uri.scheme == "http":
        raise SourceError(f"--uri: models cannot be fetched from http(s) URLs: {raw_uri!r}")
    version = _mlflow_version(uri) if uri.scheme == "mlflow" else None
    # Checked before downloading: a version that is not the job's is never fetched.
    expected = _expected_digest(uri, version, expect_digest, expect_job_uid)
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = version.fingerprint if version else source_fingerprint(uri, revision)
    result = _fill_dest(uri, revision, out, fingerprint)
    if expected and result.digest != expected:
        where = "the copy already in" if result.skipped else "what was fetched into"
        raise FetchRefused(
            raw_uri,
            DIGEST_MISMATCH,
            f"{raw_uri}: the digest of {where} {out} is {result.digest}; expected {expected}",
            expected,
            result.digest,
        )
    return FetchResult(
        raw_uri,
        out,
        result.digest,
        result.skipped,
        fingerprint or "",
        verified_digest=expected,
        verified_job_uid=expect_job_uid or None,
    )


def _fill_dest(uri: Uri, revision: str | None, out: Path, fingerprint: str | None) -> FetchResult:
    raw_uri = uri.raw
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
