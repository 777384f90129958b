#!/usr/bin/env bash
# Builds the local control plane, and syft for the images' SBOMs, from Go modules (no prebuilt
# downloads) and caches each binary by version under
# ${XDG_CACHE_HOME:-~/.cache}/sovereign-ai/bin/<component>-<version>/.
#
#   hack/build-control-plane.sh                build what is missing, print the cache folder
#   hack/build-control-plane.sh --force        rebuild everything
#   hack/build-control-plane.sh syft helm ...  only these components (names as in the log)
#
# Two runs at once (make -j2 control-plane images: the images need syft) never build one
# component twice: each component is built under its own lock, and checked again once held.
#
# When KUBEBUILDER_ASSETS names a folder that already holds a binary, that binary is used and
# not built. Cold, on 2 cores, the whole build takes tens of minutes; progress is printed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/sovereign-ai/bin"
force=0
[[ "${1:-}" == "--force" ]] && { force=1; shift; }
only=("$@")

log() { printf '[control-plane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

have_asset() {  # a binary already in KUBEBUILDER_ASSETS
  [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "${KUBEBUILDER_ASSETS}/$1" ]]
}

require_go() {
  if ! command -v go >/dev/null 2>&1; then
    log "ERROR: Go >= ${MIN_GO_VERSION} is needed to build the control plane, and it is not on PATH."
    log "Either install Go >= ${MIN_GO_VERSION} (https://go.dev/doc/install, or your distribution's package),"
    log "or set KUBEBUILDER_ASSETS to a folder holding: etcd kube-apiserver kube-controller-manager"
    log "kube-scheduler kubectl kwok helm kuberay-operator."
    exit 3
  fi
  local have
  have=$(go env GOVERSION | sed 's/^go//')
  if [[ "$(printf '%s\n%s\n' "$MIN_GO_VERSION" "$have" | sort -V | head -n1)" != "$MIN_GO_VERSION" ]]; then
    log "ERROR: Go ${have} is too old; Go >= ${MIN_GO_VERSION} is needed (or set KUBEBUILDER_ASSETS, see README)."
    exit 3
  fi
}

# build_component NAME VERSION BINARIES... -- COMMAND...
# Runs COMMAND with $dest set to the versioned cache folder, unless every binary is present.
build_component() {
  local name=$1 version=$2; shift 2
  local bins=()
  while [[ $1 != "--" ]]; do bins+=("$1"); shift; done
  shift
  if [[ ${#only[@]} -gt 0 && " ${only[*]} " != *" $name "* ]]; then
    return
  fi
  dest="$cache/${name}-${version}"
  mkdir -p "$cache"
  local lock
  exec {lock}>"$cache/.${name}-${version}.lock"
  if ! flock --nonblock "$lock"; then
    log "$name $version: another build holds it; waiting"
    flock "$lock"
  fi
  local missing=0 b
  for b in "${bins[@]}"; do
    have_asset "$b" && continue
    [[ $force == 0 && -e "$dest/$b" ]] && continue
    missing=1
  done
  if [[ $missing == 0 ]]; then
    log "$name $version: cached"
    exec {lock}>&-
    return
  fi
  require_go
  mkdir -p "$dest"
  log "$name $version: building ${bins[*]} ..."
  local start=$SECONDS
  "$@"
  log "$name $version: done in $((SECONDS - start)) s"
  exec {lock}>&-
}

export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--trimpath}"

build_etcd() {
  (cd "$here/go/etcd" && go build -ldflags "-s -w" -o "$dest/etcd" go.etcd.io/etcd/server/v3)
}

# The version goes in through ldflags, as Kubernetes' own build does, so that `--version` and
# `/version` report the real release instead of v0.0.0-master.
kube_ldflags() {
  local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  local pkg ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=${KUBERNETES_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done
  echo "$ldflags"
}
build_kube() {
  (cd "$here/go/kube" && go build -ldflags "$(kube_ldflags)" -o "$dest/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl)
}
# The real node: kubelet and kube-proxy from the same module and version as the control plane.
build_kube_node() {
  (cd "$here/go/kube" && go build -ldflags "$(kube_ldflags)" -o "$dest/" \
    k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy)
}

# These modules carry no replace lines, so `go install module/cmd@version` builds them as released.
# module_dir MODULE@VERSION: where the Go module cache holds that module's files.
module_dir() {
  go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}

build_kwok() {
  GOBIN="$dest" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
  # kwok acts as a kubelet only through Stage definitions: take the ones its own module ships
  # (node initialisation, lease heartbeats, the pod lifecycle).
  local stages
  stages="$(module_dir "sigs.k8s.io/kwok@${KWOK_VERSION}")/kustomize/stage"
  mkdir -p "$dest/stages"
  cp "$stages"/node/fast/node-initialize.yaml \
    "$stages"/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    "$stages"/pod/general/pod-*.yaml "$dest/stages/"
  chmod u+w "$dest"/stages/*.yaml
}
# helm as its release is built (the ldflags of helm's Makefile): the version, and the Kubernetes
# version helm assumes when no cluster is asked (`helm template`, `helm lint`: the chart's
# kubeVersion check and .Capabilities.KubeVersion). Helm's Makefile derives that one from the
# k8s.io/client-go its go.mod requires (v0.N.x -> 1.N); without it helm assumes v1.20 and refuses
# a chart that needs more. gitCommit and gitTreeState stay empty: a module zip has no git.
helm_ldflags() {
  local gomod client_go
  gomod="$(module_dir "helm.sh/helm/v3@${HELM_VERSION}")/go.mod"
  client_go=$(sed -nE 's#^[[:space:]]*(require[[:space:]]+)?k8s\.io/client-go[[:space:]]+(v[^[:space:]]+).*#\2#p' "$gomod")
  if [[ ! $client_go =~ ^v([0-9]+)\.([0-9]+)\. ]]; then
    log "ERROR: no k8s.io/client-go version in $gomod (found '${client_go}')"
    return 1
  fi
  local major=$((BASH_REMATCH[1] + 1)) minor=${BASH_REMATCH[2]} pkg
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=${major} -X $pkg.k8sVersionMinor=${minor}"
  done
  echo "$ldflags"
}
build_helm() {
  local ldflags
  ldflags=$(helm_ldflags)
  GOBIN="$dest" go install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
}
build_kuberay() {
  GOBIN="$dest" go install -ldflags "-s -w" "github.com/ray-project/kuberay/ray-operator@${KUBERAY_VERSION}"
  mv "$dest/ray-operator" "$dest/kuberay-operator"
  # The CRDs that match this operator build, from the same module version.
  local moddir
  moddir=$(module_dir "github.com/ray-project/kuberay/ray-operator@${KUBERAY_VERSION}")
  mkdir -p "$dest/crds"
  cp "$moddir"/config/crd/bases/ray.io_*.yaml "$dest/crds/"
  chmod u+w "$dest"/crds/*.yaml
}

# containerd 2.x (kubelet 1.36 refuses 1.x): the daemon, its runc shim (found through PATH) and
# ctr (image import). Its go.mod has no replace lines. No btrfs, devmapper or zfs snapshotters:
# they need cgo, and the node uses overlayfs.
build_containerd() {
  local cmd
  for cmd in containerd containerd-shim-runc-v2 ctr; do
    GOBIN="$dest" go install -tags "no_btrfs no_devmapper no_zfs" \
      -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=${CONTAINERD_VERSION}" \
      "github.com/containerd/containerd/v2/cmd/${cmd}@${CONTAINERD_VERSION}"
  done
}
# Only the plugins the cluster's Corefile uses, from a wrapper module (hack/go/coredns), cached
# as "coredns-cluster" so that it never mixes with a build of every plugin.
build_coredns() {
  (cd "$here/go/coredns" && go build -ldflags "-s -w" -o "$dest/coredns" .)
}
# kube-score, the manifest linter of the unit tests (tests/unit/test_manifest_lint.py). Its go.mod
# has no replace lines; the version goes in as its release (goreleaser) puts it, without the "v".
build_kube_score() {
  GOBIN="$dest" go install -ldflags "-s -w -X main.version=${KUBE_SCORE_VERSION#v}" \
    "github.com/zegl/kube-score/cmd/kube-score@${KUBE_SCORE_VERSION}"
}
# The Argo CD health-script runner (hack/go/argocd-health): this repository's own source, so its
# cache key is the gopher-lua version plus a digest of the wrapper's files (an edit rebuilds it).
# sovereign_operator/devcluster/binaries.py computes the same digest to find it.
argocd_health_key() {
  (cd "$here/go/argocd-health" && find . -maxdepth 1 -type f -printf '%f\n' | LC_ALL=C sort \
    | xargs cat | sha256sum | cut -c1-12)
}
build_argocd_health() {
  (cd "$here/go/argocd-health" && go build -ldflags "-s -w" -o "$dest/argocd-health" .)
}
# SeaweedFS's weed (master, volume, filer and S3 gateway in one binary), from a wrapper module:
# its go.mod has a replace line.
build_seaweedfs() {
  (cd "$here/go/seaweedfs" && go build -ldflags "-s -w" -o "$dest/weed" \
    github.com/seaweedfs/seaweedfs/weed)
}
# Kueue's manager, and its CRDs and webhook manifests from the same module version: the local
# cluster serves its webhooks on loopback (devcluster/kueue.py), as a user's cluster does on a
# Service. Its go.mod has no replace lines; the version goes in as its Makefile puts it.
build_kueue() {
  GOBIN="$dest" go install -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=${KUEUE_VERSION}" \
    "sigs.k8s.io/kueue/cmd/kueue@${KUEUE_VERSION}"
  local moddir
  moddir=$(module_dir "sigs.k8s.io/kueue@${KUEUE_VERSION}")
  mkdir -p "$dest/crds"
  cp "$moddir"/config/components/crd/bases/kueue.x-k8s.io_*.yaml "$dest/crds/"
  cp "$moddir"/config/components/webhook/manifests.yaml "$dest/webhooks.yaml"
  chmod u+w "$dest"/crds/*.yaml "$dest/webhooks.yaml"
}
# --- Argo CD (docs/gitops.md) ---
# Argo CD's multi-call binary (it picks its role from argv[0] or ARGOCD_BINARY_NAME: application
# controller, repo server, CLI), from a wrapper module (hack/go/argocd): its go.mod has replace
# lines. Its CRDs come from the same module version.
build_argocd() {
  (cd "$here/go/argocd" && go build -ldflags "-s -w \
    -X github.com/argoproj/argo-cd/v3/common.version=${ARGOCD_VERSION#v}" \
    -o "$dest/argocd" github.com/argoproj/argo-cd/v3/cmd)
  local moddir
  moddir=$(cd "$here/go/argocd" && go list -m -f '{{.Dir}}' "github.com/argoproj/argo-cd/v3")
  mkdir -p "$dest/crds"
  cp "$moddir"/manifests/crds/*-crd.yaml "$dest/crds/"
  chmod u+w "$dest"/crds/*.yaml
}
# --- end Argo CD ---
build_syft() {
  GOBIN="$dest" go install -ldflags "-s -w -X main.version=${SYFT_VERSION}" \
    "github.com/anchore/syft/cmd/syft@${SYFT_VERSION}"
}

# syft first: `make images`, running beside this build, waits for it (and nothing else).
build_component syft "$SYFT_VERSION" syft -- build_syft
build_component etcd "$ETCD_VERSION" etcd -- build_etcd
build_component kubernetes "$KUBERNETES_VERSION" kube-apiserver kube-controller-manager kube-scheduler kubectl -- build_kube
build_component kwok "$KWOK_VERSION" kwok stages/pod-ready.yaml -- build_kwok
# The recipe revision is part of the cache folder, so a change to build_helm rebuilds a cached helm.
build_component helm "${HELM_VERSION}-r${HELM_RECIPE}" helm -- build_helm
build_component kuberay "$KUBERAY_VERSION" kuberay-operator crds/ray.io_rayjobs.yaml -- build_kuberay
build_component kueue "$KUEUE_VERSION" kueue crds/kueue.x-k8s.io_workloads.yaml webhooks.yaml -- build_kueue
build_component kubernetes-node "$KUBERNETES_VERSION" kubelet kube-proxy -- build_kube_node
build_component containerd "$CONTAINERD_VERSION" containerd containerd-shim-runc-v2 ctr -- build_containerd
build_component coredns-cluster "$COREDNS_VERSION" coredns -- build_coredns
build_component seaweedfs "$SEAWEEDFS_VERSION" weed -- build_seaweedfs
build_component argocd-health "${GOPHER_LUA_VERSION}-$(argocd_health_key)" argocd-health -- build_argocd_health
build_component kube-score "$KUBE_SCORE_VERSION" kube-score -- build_kube_score
# Argo CD (docs/gitops.md)
build_component argocd "$ARGOCD_VERSION" argocd crds/application-crd.yaml -- build_argocd
log "${only[*]:-all binaries} ready under $cache"
echo "$cache"
