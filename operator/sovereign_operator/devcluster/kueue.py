"""Kueue in the local cluster: its manager, with the RayJob integration, as a user runs it.

A user's cluster runs Kueue as a pod behind a Service, and the API server calls its webhooks
through that Service. Here the manager runs on this machine, so its webhooks listen on the
cluster's address with a certificate from the cluster's CA, and the webhook configurations
that Kueue's own module ships are rewritten to call that URL. Only the webhooks of the kinds
this cluster runs are kept: Kueue's own objects and Ray's.

Pure builders; LocalCluster starts the process (cluster.py ``_start_kueue``).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

KUEUE_NAMESPACE = "kueue-system"
# The kinds (plural names) a queue for EU GPU pools is made of, waited for before use.
KUEUE_KINDS_USED = ("workloads", "clusterqueues", "localqueues", "resourceflavors")
# The integrations this product needs: a FineTuneJob runs as a RayJob.
FRAMEWORKS = ("ray.io/rayjob",)
# The API groups whose webhooks are kept: Kueue's own objects (defaults and validation of
# ClusterQueues, Workloads, ...) and RayJobs (suspended at creation until admitted).
WEBHOOK_GROUPS = frozenset({"kueue.x-k8s.io", "ray.io"})


def manager_config(host: str, webhook_port: int, cert_dir: Path, health_port: int,
                   metrics_port: int) -> dict[str, Any]:  # fmt: skip
    """Kueue's Configuration: no leader election (one manager), no certificate management of
    its own (the cluster's CA signs its serving certificate), every listener on ``host``."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": KUEUE_NAMESPACE,
        "manageJobsWithoutQueueName": False,
        "health": {"healthProbeBindAddress": f"{host}:{health_port}"},
        "metrics": {"bindAddress": f"{host}:{metrics_port}"},
        "webhook": {"host": host, "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "integrations": {"frameworks": list(FRAMEWORKS)},
    }


def in_own_etc(upper: Path, work: Path) -> list[str]:
    """The argv prefix that runs a command in a mount namespace of its own, where /etc is an
    overlay of this machine's /etc with ``upper`` on top (``work``: overlayfs's scratch folder,
    on the same filesystem). Outside that namespace nothing changes. Needs root, or a user
    namespace, which ``unshare`` makes for a user who is not root."""
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    mount = 'mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1,workdir=$2" /etc'
    script = f'{mount} && shift 2 && exec "$@"'
    return ["unshare", *user, "--mount", "--propagation", "private", "--",
            "sh", "-c", script, "sh", str(upper), str(work)]  # fmt: skip


def webhook_configurations(manifests: str, base_url: str, ca_bundle: str) -> list[dict[str, Any]]:
    """Kueue's webhook configurations (``manifests``: its module's manifests.yaml), each
    webhook calling ``base_url`` + its path instead of the in-cluster Service, and only those
    for ``WEBHOOK_GROUPS``. ``ca_bundle``: the base64 of the CA that signed the server."""
    result = []
    for document in yaml.safe_load_all(manifests):
        if not document:
            continue
        configuration = copy.deepcopy(document)
        webhooks = []
        for webhook in configuration.get("webhooks") or []:
            groups = {group for rule in webhook.get("rules") or [] for group in rule["apiGroups"]}
            if not groups & WEBHOOK_GROUPS:
                continue
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {"url": f"{base_url}{path}", "caBundle": ca_bundle}
            webhooks.append(webhook)
        configuration["webhooks"] = webhooks
        configuration["metadata"] = {"name": f"kueue-{document['metadata']['name']}"}
        result.append(configuration)
    return result
