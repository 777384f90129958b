"""Where the audit log's heads are claimed outside it, gathered for ``sovai audit verify``.

A head written into a FineTuneJob's or ModelDeployment's ``status.audit``, or into a registered
model version's tag, promises that the log held that record; the log is only trustworthy if
those promises still hold. Reading them from the cluster and from MLflow lives here, apart from
the command line, so that the pure parts (``status_claims``, ``version_claims``) test alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from ..k8s import client as k8s
from ..mlflow_rest import MlflowError, MlflowRest
from .log import Location
from .records import RecordError, parse_head
from .verify import Claim, Finding

FINETUNEJOB = "FineTuneJob"
MODELDEPLOYMENT = "ModelDeployment"
HEAD_TAG = "sovai.audit.chain_head"
JOB_UID_TAG = "sovai.job.uid"
HTTP_TIMEOUT_S = 30.0


class Unreadable(Exception):
    """The log, the cluster or MLflow cannot be read: nothing can be concluded (exit 2)."""


def cluster_objects(kubeconfig: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every FineTuneJob and ModelDeployment in the cluster, all namespaces."""
    try:
        kube = k8s.Kube(partial(k8s.load_configuration, kubeconfig), pool_size=2)
    except Exception as error:  # no kubeconfig, a bad one, unreadable certificates
        raise Unreadable(
            f"cannot reach the cluster: {error} (--no-cluster: the log alone)"
        ) from None
    return _everywhere(kube, k8s.FINETUNEJOB), _everywhere(kube, k8s.MODELDEPLOYMENT)


def _everywhere(kube: k8s.Kube, kind: k8s.Kind) -> list[dict[str, Any]]:
    """The kind's objects in all namespaces: the same plural without a namespace in its path.
    (A 429 is waited out by the client, after its Retry-After.)"""
    everywhere = k8s.Kind(kind.api_version, kind.plural, namespaced=False)
    try:
        return kube.list(everywhere, None)
    except k8s.ApiError as error:
        if error.status == 404:  # the kind is not installed, so none exist
            return []
        raise Unreadable(f"cannot list {kind.plural}: {error}") from None
    except Exception as error:  # refused connections, TLS
        raise Unreadable(f"cannot list {kind.plural} in the cluster: {error}") from None


def _same_log(uri: Any, location: Location) -> bool:
    try:
        return isinstance(uri, str) and Location.parse(uri) == location
    except ValueError:
        return False


def _who(kind: str, obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return f"{kind} {meta.get('namespace')}/{meta.get('name')}", str(meta.get("uid"))


def status_claims(
    objects: Iterable[Mapping[str, Any]], kind: str, location: Location
) -> tuple[list[Claim], list[Finding]]:
    """The heads the objects' ``status.audit`` claims in this log (objects whose status names
    another log are not this log's business)."""
    claims, findings = [], []
    for obj in objects:
        trail = (obj.get("status") or {}).get("audit") or {}
        if not _same_log(trail.get("log"), location):
            continue
        who, uid = _who(kind, obj)
        for field in ("head", "admission"):
            text = trail.get(field)
            if not text:
                continue
            try:
                claims.append(Claim(f"{who} status.audit.{field}", uid, parse_head(str(text))))
            except RecordError as error:
                findings.append(Finding(None, f"{who} status.audit.{field}: {error}"))
    return claims, findings


def version_claims(
    job: Mapping[str, Any], version: Mapping[str, Any] | None
) -> tuple[list[Claim], list[Finding]]:
    """The head a job's registered model version claims by its tag; ``version`` is MLflow's
    ``model_version`` object, None when MLflow has no such version."""
    who, uid = _who(FINETUNEJOB, job)
    status = job.get("status") or {}
    mlflow = status.get("mlflow") or {}
    name = f"MLflow model {mlflow.get('modelName')} version {mlflow.get('modelVersion')}"
    if version is None:
        return [], [Finding(None, f"{who} registered {name}, which MLflow does not have")]
    tags = {str(t.get("key")): str(t.get("value")) for t in version.get("tags") or []}
    findings = []
    tagged_uid = tags.get(JOB_UID_TAG, uid)
    if tagged_uid != uid:
        findings.append(Finding(None, f"{name} is tagged {JOB_UID_TAG}={tagged_uid}, not {who}"))
    text = tags.get(HEAD_TAG)
    if text is None:
        # The trainer tags a version whenever the job was admitted into a log.
        if (status.get("audit") or {}).get("admission"):
            findings.append(Finding(None, f"{name} ({who}) has no {HEAD_TAG} tag"))
        return [], findings
    try:
        return [Claim(f"{name} tag {HEAD_TAG}", tagged_uid, parse_head(text))], findings
    except RecordError as error:
        return [], [*findings, Finding(None, f"{name} tag {HEAD_TAG}: {error}")]


def mlflow_claims(
    tracking_uri: str, jobs: Iterable[Mapping[str, Any]], location: Location
) -> tuple[list[Claim], list[Finding]]:
    """The tags of each version registered by a job that records into this log."""
    if not tracking_uri.startswith(("http://", "https://")):
        raise Unreadable(f"MLflow tracking URI {tracking_uri!r}: only http(s) can be read here")
    claims, findings = [], []
    for job in jobs:
        status = job.get("status") or {}
        mlflow = status.get("mlflow") or {}
        name, number = mlflow.get("modelName"), mlflow.get("modelVersion")
        if (
            not name
            or not number
            or not _same_log((status.get("audit") or {}).get("log"), location)
        ):
            continue
        version = fetch_model_version(tracking_uri, str(name), str(number))
        more, found = version_claims(job, version)
        claims += more
        findings += found
    return claims, findings


def fetch_model_version(tracking_uri: str, name: str, version: str) -> dict[str, Any] | None:
    """MLflow's REST answer for one model version (the operator image has no mlflow client);
    None when it has no such version."""
    try:
        mlflow = MlflowRest.from_environment(tracking_uri, timeout=HTTP_TIMEOUT_S)
        answer = mlflow.get(
            "model-versions/get",
            {"name": name, "version": version},
            f"model {name} version {version}",
        )
    except (ValueError, MlflowError) as error:
        raise Unreadable(str(error)) from None
    found: Any = (answer or {}).get("model_version")
    return dict(found) if isinstance(found, dict) else None
