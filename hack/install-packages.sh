#!/usr/bin/env bash
# Installs the Debian packages that `make images`, the image tests and the local cluster's real
# node use, when missing:
#   buildah (builds the Containerfiles without a daemon), mmdebstrap (the Debian root
#   filesystem), umoci and runc (unpack and run an image; runc is also the node's OCI runtime),
#   containernetworking-plugins (the node's CNI: bridge, host-local, loopback, portmap),
#   iptables (kube-proxy's Service rules).
#   redis-server and git (git daemon): Argo CD's cache and the git server of the local cluster's
#   Argo CD (devcluster/argocd.py, docs/gitops.md).
# syft, containerd, kubelet and kube-proxy are built from their Go modules by
# hack/build-control-plane.sh.
set -euo pipefail
declare -A provides=(
  [buildah]=/usr/bin/buildah
  [mmdebstrap]=/usr/bin/mmdebstrap
  [umoci]=/usr/bin/umoci
  [runc]=/usr/sbin/runc
  [containernetworking-plugins]=/usr/lib/cni/bridge
  [iptables]=/usr/sbin/iptables
  # Argo CD (docs/gitops.md)
  [redis-server]=/usr/bin/redis-server
  [git]=/usr/lib/git-core/git-daemon
)
missing=()
for package in "${!provides[@]}"; do
  [[ -x ${provides[$package]} ]] || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "[packages] ERROR: missing ${missing[*]}; install them (Debian/Ubuntu: apt-get install ${missing[*]})" >&2
  exit 3
fi
echo "[packages] installing ${missing[*]} from Debian's packages ..." >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
