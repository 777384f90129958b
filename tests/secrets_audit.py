"""A check, at the end of a test tier, that no credential the tests created leaked: every
Secret value in the cluster (at least 12 characters, decoded) is looked for in the operator
logs of the tier, in Events, in the statuses of FineTuneJobs and ModelDeployments, and in the
children the operator and KubeRay made (ConfigMaps, RayJobs, RayClusters, Jobs, Deployments,
Services, pods), and in the MLflow runs and model versions the tier's jobs recorded (their
tags and params, as tests read them from MLflow's REST API). Secrets may be referenced there
(secretKeyRef, envFrom), never copied.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sovereign_operator.devcluster import LocalCluster

MIN_LENGTH = 12
# Where a value would leak to; the Secrets themselves (and the service-account token
# controller's own copies) are where they belong.
PLACES = (
    "events",
    "finetunejobs.sovereign-ai.eu",
    "modeldeployments.sovereign-ai.eu",
    "configmaps",
    "rayjobs.ray.io",
    "rayclusters.ray.io",
    "jobs.batch",
    "deployments.apps",
    "services",
    "pods",
)
# Operator log files of the tier (OperatorProcess registers each one it writes).
OPERATOR_LOGS: list[Path] = []
# (where, text) of what the tier read from elsewhere: MLflow runs and model versions.
RECORDED: list[tuple[str, str]] = []


def record(where: str, document: object) -> None:
    """Add what a test read (an MLflow run, say) to the texts the tier's audit searches."""
    RECORDED.append((where, json.dumps(document)))


def _get(cluster: LocalCluster, resource: str) -> list[dict[str, Any]]:
    result = cluster.kubectl("get", resource, "-A", "-o", "json", check=False, timeout=120)
    if result.returncode != 0:  # a kind this tier never installed (no KubeRay CRDs, say)
        return []
    items: list[dict[str, Any]] = json.loads(result.stdout).get("items", [])
    return items


def secret_values(cluster: LocalCluster) -> dict[str, str]:
    """Decoded value -> "namespace/secret/key", for every value long enough to be a secret."""
    values = {}
    for secret in _get(cluster, "secrets"):
        meta = secret.get("metadata") or {}
        for key, encoded in (secret.get("data") or {}).items():
            try:
                value = base64.b64decode(encoded).decode()
            except (ValueError, UnicodeDecodeError):
                continue  # binary (a certificate's DER, say): not text that could be logged
            # Certificates are public (every namespace's kube-root-ca.crt holds the CA's).
            if len(value) >= MIN_LENGTH and not value.startswith("-----BEGIN CERTIFICATE"):
                values[value] = f"{meta.get('namespace')}/{meta.get('name')}/{key}"
    return values


def leaks(cluster: LocalCluster, logs: Iterable[Path] = ()) -> list[str]:
    """Each place a Secret's value appears in."""
    values = secret_values(cluster)
    found = []
    texts = [(resource, json.dumps(_get(cluster, resource))) for resource in PLACES]
    texts += [(str(path), path.read_text(errors="replace")) for path in logs if path.exists()]
    texts += RECORDED
    for where, text in texts:
        for value, origin in values.items():
            if value in text:
                found.append(f"the value of Secret {origin} appears in {where}")
    return found
