#!/usr/bin/env bash
# Regenerate the protobuf/gRPC stubs from proto/gpupool_proto/*.proto (the inference protocol, and
# the kubelet's device plugin and pod resources APIs the emulated NVIDIA components speak).
#   bash scripts/protogen.sh [--check] [PYTHON]
# --check generates into a temporary directory and fails, listing the files, if the checked-in
# stubs differ (grpcio-tools is pinned in pyproject.toml because versions generate different code).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
check=0
if [[ "${1:-}" == "--check" ]]; then check=1; shift; fi
py="${1:-python3}"
out="$here/proto"
if (( check )); then out="$(mktemp -d)"; trap 'rm -rf "$out"' EXIT; mkdir -p "$out/gpupool_proto"; fi
cd "$here/proto"
protos=(inference deviceplugin_v1beta1 podresources_v1)
for p in "${protos[@]}"; do
  "$py" -m grpc_tools.protoc -I. --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" "gpupool_proto/$p.proto"
done
if (( check )); then
  stale=0
  for f in $(for p in "${protos[@]}"; do echo "${p}_pb2.py ${p}_pb2.pyi ${p}_pb2_grpc.py"; done); do
    if ! cmp -s "$out/gpupool_proto/$f" "$here/proto/gpupool_proto/$f"; then
      echo "stale: proto/gpupool_proto/$f (run: bash scripts/protogen.sh)" >&2; stale=1
    fi
  done
  exit $stale
fi
echo "regenerated proto/gpupool_proto/{$(IFS=,; echo "${protos[*]}")}_pb2{.py,.pyi,_grpc.py}"
