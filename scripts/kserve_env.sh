#!/usr/bin/env bash
# A separate virtualenv for the kserve SDK (kserve 0.21.0 pins protobuf<7, the project's venv has
# protobuf 7; and kserve's `inference` protos clash with tritonclient's in one process anyway).
# Torch, numpy, tokenizers and safetensors come from the project's venv through a .pth file placed
# *after* this venv's own site-packages, so kserve's protobuf/grpcio win and nothing big is copied.
# Usage: bash scripts/kserve_env.sh <project-venv>   -> prints the kserve venv's python.
# scripts/setup.sh runs it: the venv sits beside the project venv and is keyed by it ("<venv>-kserve").
set -euo pipefail
base="${1:?path of the project venv}"
dest="${GPUPOOL_KSERVE_VENV:-${base%/}-kserve}"
if [[ ! -f "$dest/.complete" ]]; then
  rm -rf "$dest"
  python3.11 -m venv "$dest" 2>/dev/null || "$base/bin/python" -m venv --without-pip "$dest"
  [[ -x "$dest/bin/pip" ]] || "$base/bin/python" -m pip --python "$dest/bin/python" install -q pip
  echo "[gpupool setup] creating $dest (the kserve SDK, for the worker's client tests)" >&2
  "$dest/bin/python" -m pip install -q "kserve==0.21.0" >&2
  site="$("$dest/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  basesite="$("$base/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$basesite" > "$site/zz_gpupool_base.pth"
  touch "$dest/.complete"
fi
echo "$dest/bin/python"
