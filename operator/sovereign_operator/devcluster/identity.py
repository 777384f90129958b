"""Act as a ServiceAccount: a kubeconfig holding a bound token from the TokenRequest API.

Used to run the operator with exactly the Helm chart's permissions (`make demo`, RBAC tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .cluster import LocalCluster


def service_account_kubeconfig(
    cluster: LocalCluster, service_account: str, namespace: str, path: Path, duration: str = "4h"
) -> Path:
    """Write a kubeconfig for ``namespace/service_account`` and check who the server sees."""
    token = cluster.kubectl(
        "create", "token", service_account, "-n", namespace, f"--duration={duration}"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [
            {
                "name": service_account,
                "context": {"cluster": admin["clusters"][0]["name"], "user": service_account},
            }
        ],
        "current-context": service_account,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    whoami = json.loads(cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=path).stdout)
    user = whoami["status"]["userInfo"]["username"]
    expected = f"system:serviceaccount:{namespace}:{service_account}"
    if user != expected:
        raise RuntimeError(f"the token authenticates as {user!r}, not {expected!r}")
    return path
