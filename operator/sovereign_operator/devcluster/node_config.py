"""Configuration of the real node (containerd, CNI, kubelet): pure builders, no I/O.

Every path is inside the node's own folder, so a stop removes everything, but for containerd's
image store, which may live in a cache between runs (realnode.py); every address is on the
bridge the node creates itself: nothing listens on, or routes to, the machine's own networks.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .nodes import REGION_LABEL, ZONE_LABEL

REAL_NODE_LABEL = "sovereign-ai.eu/real-node"
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
RUNC = Path("/usr/sbin/runc")


@dataclass(frozen=True)
class NodeLayout:
    """Where the node keeps its state, and its addresses."""

    root: Path
    name: str
    bridge: str
    subnet: ipaddress.IPv4Network
    service_cidr: str
    region: str = "eu-west-par"
    zone: str = "eu-west-par-a"

    @property
    def node_ip(self) -> str:
        """The bridge's own address: kubelet's address and the pods' gateway."""
        return str(next(self.subnet.hosts()))

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    def labels(self) -> dict[str, str]:
        return {REGION_LABEL: self.region, ZONE_LABEL: self.zone, REAL_NODE_LABEL: "true"}


def to_toml(table: dict[str, Any], prefix: str = "") -> str:
    """The few TOML shapes containerd's config uses: nested tables of strings, numbers, booleans
    and lists of strings. Table names are quoted, as containerd's plugin ids hold dots."""
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    lines = [f"[{prefix}]"] if prefix and scalars else []
    lines += [f"{key} = {json.dumps(value)}" for key, value in scalars.items()]
    for key, value in tables.items():
        lines.append(to_toml(value, f"{prefix}.{json.dumps(key)}" if prefix else json.dumps(key)))
    return "\n".join(line for line in lines if line)


def containerd_config(
    layout: NodeLayout, sandbox_image: str, store: Path | None = None
) -> dict[str, Any]:
    """containerd 2.4 (config version 4) for kubelet's CRI. ``store`` is containerd's root (its
    images, snapshots and metadata), by default inside the node's folder."""
    state = layout.root / "containerd"
    cri_runtime = "io.containerd.cri.v1.runtime"
    return {
        "version": 4,
        "root": str(store or state / "root"),
        "state": str(state / "state"),
        "temp": str(state / "tmp"),
        "imports": [],  # nothing from /etc/containerd: the node is all in its folder
        "plugins": {
            "io.containerd.server.v1.grpc": {"address": str(layout.containerd_socket)},
            "io.containerd.server.v1.ttrpc": {"address": f"{layout.containerd_socket}.ttrpc"},
            "io.containerd.internal.v1.opt": {"path": str(state / "opt")},
            "io.containerd.cri.v1.images": {
                "snapshotter": "overlayfs",
                # No registry is reachable: the sandbox image is imported before the first pod.
                "pinned_images": {"sandbox": sandbox_image},
            },
            cri_runtime: {
                # This machine refuses negative oom_score_adj (no CAP_SYS_RESOURCE); without this
                # every sandbox fails with "can't get final child's PID from pipe: EOF".
                "restrict_oom_score_adj": True,
                # Pods' network namespaces in the node's folder, not /var/run/netns.
                "netns_mounts_under_state_dir": True,
                "cni": {"bin_dirs": [str(CNI_BIN_DIR)], "conf_dir": str(layout.cni_conf_dir)},
                "containerd": {
                    "default_runtime_name": "runc",
                    "runtimes": {
                        "runc": {
                            "runtime_type": "io.containerd.runc.v2",
                            # cgroups v1 (hybrid) here, managed by kubelet's cgroupfs driver.
                            "options": {
                                "SystemdCgroup": False,
                                "BinaryName": str(RUNC),
                                "Root": str(state / "runc"),
                            },
                        }
                    },
                },
            },
            "io.containerd.grpc.v1.cri": {"stream_server_address": "127.0.0.1"},
        },
    }


def cni_config(layout: NodeLayout) -> dict[str, Any]:
    """A bridge with host-local addresses. No default route and no masquerade: pods reach each
    other, the node and the Service range, and nothing outside the cluster."""
    return {
        "cniVersion": "1.0.0",
        "name": "sovai",
        "plugins": [
            {
                "type": "bridge",
                "bridge": layout.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(layout.subnet), "gateway": layout.node_ip}]],
                    "routes": [{"dst": layout.service_cidr}],
                    "dataDir": str(layout.root / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(
    layout: NodeLayout, port: int, healthz_port: int, client_ca: Path, serving: tuple[Path, Path]
) -> dict[str, Any]:
    """kubelet's KubeletConfiguration: x509 and webhook authentication and authorization (the
    API server calls it with a client certificate), cgroups v1 through cgroupfs, and logs, DNS
    settings and volumes in the node's folder."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": layout.node_ip,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(serving[0]),
        "tlsPrivateKeyFile": str(serving[1]),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "podLogsDir": str(layout.root / "pod-logs"),
        "resolvConf": str(layout.resolv_conf),
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [layout.node_ip],
        # A nearly full disk on a CI machine must not evict the tests' pods.
        "evictionHard": {},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "registerNode": True,
        "maxPods": 50,
    }


def coredns_corefile(layout: NodeLayout, kubeconfig: Path, health_port: int) -> str:
    """CoreDNS's configuration: the cluster's zone from the API server, nothing else (no
    ``forward``), on the node's address only."""
    return "\n".join(
        [
            f"{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{",
            f"    bind {layout.node_ip}",
            "    errors",
            f"    health 127.0.0.1:{health_port}",
            f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{",
            f"        kubeconfig {kubeconfig}",
            "        pods insecure",
            "    }",
            "    cache 30",
            "}",
            "",
        ]
    )
