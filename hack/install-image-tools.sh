#!/usr/bin/env bash
# Installs what `make images` and the image tests run, from Debian's packages: buildah (builds
# the Containerfiles without a daemon), mmdebstrap (the Debian root filesystem), umoci and runc
# (unpack and run an image to inspect it). syft, for the SBOMs, is built from its Go module by
# hack/build-control-plane.sh.
set -euo pipefail
packages=(buildah mmdebstrap umoci runc)
missing=()
for package in "${packages[@]}"; do
  command -v "$package" >/dev/null 2>&1 || missing+=("$package")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "[images] ERROR: missing ${missing[*]}; install them (Debian/Ubuntu: apt-get install ${missing[*]})" >&2
  exit 3
fi
echo "[images] installing ${missing[*]} from Debian's packages ..." >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
