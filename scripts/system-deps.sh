#!/usr/bin/env bash
# System packages the real kubelet nodes need: to build (runc is cgo and links libseccomp, because the
# kubelet gives every pod the RuntimeDefault seccomp profile) and to run (iptables for each node's
# bridge rule and the kubelet's, ip, unshare and mount: local/realnodes.prerequisites checks the same
# list). Installed with apt when this runs as root on a Debian-like machine and they are missing;
# otherwise it says what is missing and the real-node tests skip with the same words. Idempotent and
# bounded: a no-op once installed. A fresh Debian machine lacked only iptables of the runtime ones.
set -uo pipefail
missing=()
[ -e /usr/include/seccomp.h ] || missing+=(libseccomp-dev)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v mount >/dev/null 2>&1 || missing+=(mount)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "[gpupool setup] real-node builds need: ${missing[*]} (install them as root; skipping)" >&2
  exit 0
fi
echo "[gpupool setup] installing ${missing[*]} with apt-get (real kubelet nodes need them)" >&2
export DEBIAN_FRONTEND=noninteractive
timeout 600 apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  timeout 300 apt-get update -q >/dev/null 2>&1
  timeout 600 apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    echo "[gpupool setup] apt-get could not install ${missing[*]}; real-node tests will skip" >&2
}
exit 0
