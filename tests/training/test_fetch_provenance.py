"""The provenance gate of `fetch`: a FineTuneJob's model is served only when its MLflow version
names the job and the fetched files hash to the digest the trainer recorded.

Models are registered the way the trainer registers them (tracking.open_run, RunLogger: run
artifacts "model", then a model version with the lineage tags) in a real MLflow store (sqlite),
and fetched back through models:/NAME/VERSION. What the CLI writes to the termination log is read
back by the operator's own parser, as the kubelet would hand it over in the pod status.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from sovereign_operator.status.serving_facts import FetchRecord, fetch_record
from sovereign_training.cli import FETCH_REFUSED, main
from sovereign_training.digest import model_digest
from sovereign_training.fetch import (
    DIGEST_MISMATCH,
    PROVENANCE_MISMATCH,
    RECORD_NAME,
    FetchRefused,
    fetch_model,
)
from sovereign_training.tracking import JOB_UID_TAG, RunLogger, open_run

pytestmark = pytest.mark.training

JOB_UID = "6f1c2d3e-aaaa-bbbb-cccc-0123456789ab"
OTHER_UID = "0badc0de-0000-1111-2222-333344445555"


@dataclass(frozen=True)
class Registered:
    uri: str  # models:/NAME/VERSION
    digest: str  # what the trainer recorded
    artifacts: Path  # the registered files in the artifact store


class Store:
    """A sqlite MLflow store, registering versions as the trainer does."""

    def __init__(self, root: Path, tracking: str) -> None:
        self.root, self.tracking, self.count = root, tracking, 0

    def register(self, tags: dict[str, str] | None = None) -> Registered:
        """A small model folder registered as a new version; tags default to the trainer's
        (job uid and model digest), `tags` replaces them."""
        self.count += 1
        folder = self.root / f"model-{self.count}"
        (folder / "sub").mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"n": self.count}), encoding="utf-8")
        (folder / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 16)
        digest = model_digest(folder)
        run_id, _ = open_run(self.tracking, "eu-dp", f"run-{self.count}", {})
        logger = RunLogger(self.tracking, run_id)
        logger.artifacts(folder, "model")
        default = {JOB_UID_TAG: JOB_UID, "sovai.model_digest": digest}
        version = logger.register("eu-dp-chat", "model", default if tags is None else tags, "t")
        source = logger.client.get_model_version("eu-dp-chat", version).source
        artifacts = Path(unquote(urlparse(source).path))
        assert (artifacts / "sub" / "weights.bin").is_file(), source
        return Registered(f"models:/eu-dp-chat/{version}", digest, artifacts)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    root = tmp_path_factory.mktemp("mlflow")
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", tracking)
        patch.setenv("MLFLOW_REGISTRY_URI", tracking)
        yield Store(root, tracking)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))


def refused(raw_uri: str, dest: Path, **expect: str) -> FetchRefused:
    with pytest.raises(FetchRefused) as caught:
        fetch_model(raw_uri, dest, **expect)
    return caught.value


def test_the_jobs_model_passes_and_says_what_it_checked(store: Store, tmp_path: Path) -> None:
    model = store.register()
    dest, log = tmp_path / "dest", tmp_path / "termination-log"
    argv = ["fetch", "--uri", model.uri, "--dest", str(dest), "--termination-log", str(log)]
    expect = ["--expect-digest", model.digest, "--expect-job-uid", JOB_UID]
    assert main([*argv, *expect]) == 0
    assert model_digest(dest) == model.digest
    record = json.loads(log.read_text())
    assert record == {
        "uri": model.uri,
        "fingerprint": model.digest,
        "digest": model.digest,
        "expectedDigest": model.digest,
        "jobUid": JOB_UID,
    }
    # The operator reads it back from the pod status.
    pod = {"status": {"initContainerStatuses": [terminated(0, log)]}}
    assert fetch_record([pod], model.uri) == FetchRecord(
        model.uri, digest=model.digest, expected_digest=model.digest, job_uid=JOB_UID
    )
    # Found again in the folder: not fetched again, checked again.
    again = fetch_model(model.uri, dest, expect_digest=model.digest, expect_job_uid=JOB_UID)
    assert (again.skipped, again.digest) == (True, model.digest)


def terminated(code: int, log: Path) -> dict[str, object]:
    message = log.read_text(encoding="utf-8")
    return {"name": "fetch-model", "state": {"terminated": {"exitCode": code, "message": message}}}


def test_a_tampered_registered_model_is_refused(store: Store, tmp_path: Path) -> None:
    model = store.register()
    flip_a_byte(model.artifacts / "sub" / "weights.bin")
    dest, log = tmp_path / "dest", tmp_path / "termination-log"
    argv = ["fetch", "--uri", model.uri, "--dest", str(dest), "--termination-log", str(log)]
    expect = ["--expect-digest", model.digest, "--expect-job-uid", JOB_UID]
    assert main([*argv, *expect]) == FETCH_REFUSED
    record = json.loads(log.read_text())
    actual = model_digest(dest)
    assert actual != model.digest
    assert record == {
        "uri": model.uri,
        "reason": DIGEST_MISMATCH,
        "error": f"{model.uri}: the digest of what was fetched into {dest} is {actual}; "
        f"expected {model.digest}",
        "expected": model.digest,
        "actual": actual,
    }
    pod = {"status": {"initContainerStatuses": [terminated(FETCH_REFUSED, log)]}}
    assert fetch_record([pod], model.uri) == FetchRecord(
        model.uri, reason=DIGEST_MISMATCH, error=record["error"]
    )
    # Refused on the next start too, where the copy is found in the folder.
    assert refused(model.uri, dest, expect_digest=model.digest).reason == DIGEST_MISMATCH
    # A spec.model.uri deployment (no expectations) is held to the version's digest tag.
    plain = refused(model.uri, tmp_path / "plain")
    assert (plain.reason, plain.expected, plain.actual) == (DIGEST_MISMATCH, model.digest, actual)


@pytest.mark.parametrize(
    ("tags", "actual"),
    [
        ({JOB_UID_TAG: OTHER_UID}, OTHER_UID),  # another job's model
        ({}, ""),  # registered by hand: no job named at all
    ],
)
def test_a_version_that_does_not_name_the_job_is_refused_before_download(
    store: Store, tmp_path: Path, tags: dict[str, str], actual: str
) -> None:
    model = store.register(tags)
    dest = tmp_path / "dest"
    error = refused(model.uri, dest, expect_digest=model.digest, expect_job_uid=JOB_UID)
    assert (error.reason, error.expected, error.actual) == (PROVENANCE_MISMATCH, JOB_UID, actual)
    assert str(error) == (
        f"{model.uri}: MLflow tag {JOB_UID_TAG} is {actual or 'missing'}; "
        f"expected the FineTuneJob's uid {JOB_UID}"
    )
    assert not dest.exists() or not any(dest.iterdir())


def test_a_version_whose_digest_tag_is_not_the_jobs_record_is_refused(
    store: Store, tmp_path: Path
) -> None:
    model = store.register({JOB_UID_TAG: JOB_UID, "sovai.model_digest": "sha256:" + "0" * 64})
    error = refused(model.uri, tmp_path / "d", expect_digest=model.digest, expect_job_uid=JOB_UID)
    assert (error.reason, error.expected) == (PROVENANCE_MISMATCH, model.digest)


def test_a_cache_cannot_launder_a_tampered_copy(store: Store, tmp_path: Path) -> None:
    model = store.register()
    dest = tmp_path / "cache"
    expect = {"expect_digest": model.digest, "expect_job_uid": JOB_UID}
    assert not fetch_model(model.uri, dest, **expect).skipped
    # Damaged in the cache: the record no longer matches, so it is fetched again, whole.
    flip_a_byte(dest / "sub" / "weights.bin")
    healed = fetch_model(model.uri, dest, **expect)
    assert (healed.skipped, healed.digest) == (False, model.digest)
    # Tampered in the cache, its record rewritten to match: found, and still refused.
    flip_a_byte(dest / "sub" / "weights.bin")
    record = json.loads((dest / RECORD_NAME).read_text())
    record["digest"] = model_digest(dest)
    (dest / RECORD_NAME).write_text(json.dumps(record))
    error = refused(model.uri, dest, **expect)
    assert (error.reason, error.expected, error.actual) == (
        DIGEST_MISMATCH,
        model.digest,
        record["digest"],
    )
    assert str(error).startswith(f"{model.uri}: the digest of the copy already in {dest} is ")


def test_job_uid_cannot_be_checked_off_mlflow(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    error = refused(str(folder), tmp_path / "dest", expect_job_uid=JOB_UID)
    assert error.reason == PROVENANCE_MISMATCH
    assert os.fspath(folder) in str(error)
