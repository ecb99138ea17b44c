#!/usr/bin/env bash
# A separate virtualenv for olah, the self-hosted Hugging Face mirror the hf:// tests download from
# (HF_ENDPOINT pointed at it, serving local git repositories with the network off). Its FastAPI
# stack stays out of the project's environment. Created once, beside the project venv
# ("<venv>-olah"), behind a lock so two test runs never build it at the same time.
# Usage: bash scripts/olah_env.sh <project-venv>   -> prints the olah-cli path.
set -euo pipefail
base="${1:?path of the project venv}"
dest="${GPUPOOL_OLAH_VENV:-${base%/}-olah}"
version="0.5.4"
exec 9>"$dest.lock"
flock 9
if [[ ! -f "$dest/.complete-$version" ]]; then
  rm -rf "$dest"
  echo "[gpupool setup] creating $dest (olah $version, the Hugging Face mirror for the hf:// tests)" >&2
  python3.11 -m venv "$dest" 2>/dev/null || "$base/bin/python" -m venv "$dest"
  "$dest/bin/python" -m pip install -q "olah==$version" >&2
  touch "$dest/.complete-$version"
fi
echo "$dest/bin/olah-cli"
