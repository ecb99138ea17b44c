#!/usr/bin/env bash
# Regenerate the protobuf/gRPC stubs from proto/gpupool_proto/inference.proto.
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
"$py" -m grpc_tools.protoc -I. --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" gpupool_proto/inference.proto
if (( check )); then
  stale=0
  for f in inference_pb2.py inference_pb2.pyi inference_pb2_grpc.py; do
    if ! cmp -s "$out/gpupool_proto/$f" "$here/proto/gpupool_proto/$f"; then
      echo "stale: proto/gpupool_proto/$f (run: bash scripts/protogen.sh)" >&2; stale=1
    fi
  done
  exit $stale
fi
echo "regenerated proto/gpupool_proto/inference_pb2{.py,.pyi,_grpc.py}"
