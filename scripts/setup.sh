#!/usr/bin/env bash
# Create (once per dependency set) the Python environment gpupool needs, outside the work tree.
#
# The virtualenv lives under ${GPUPOOL_CACHE:-~/.cache/gpupool}/venv/<hash of pyproject.toml's
# dependency tables>, so a fresh clone on the same machine reuses it and a dependency change builds a
# new one. A venv is marked complete only after every install succeeded: an interrupted setup is
# redone, never half-used. Prints the venv's path on stdout; progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${GPUPOOL_CACHE:-$HOME/.cache/gpupool}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
"$python" -c 'import sys; assert sys.version_info[:2] >= (3, 11), sys.version' >/dev/null 2>&1 || {
  echo "gpupool needs Python >= 3.11 (found: $($python --version 2>&1)). Install python3.11 and retry." >&2
  exit 2
}
key="$("$python" - "$here/pyproject.toml" <<'PY'
import hashlib, sys, tomllib
data = tomllib.load(open(sys.argv[1], "rb"))
project = data["project"]
# only the groups this venv installs (below): an extra it does not install (worker-cpu, a subset
# for images) does not make a new environment
groups = {k: v for k, v in project.get("optional-dependencies", {}).items() if k in ("worker", "models", "sim", "dev")}
blob = repr((project.get("dependencies"), groups, sys.version_info[:2]))
print(hashlib.sha256(blob.encode()).hexdigest()[:16])
PY
)"
venv="$cache/venv/$key"
mkdir -p "$cache/venv"
# One setup at a time per environment: a second clone (or a second `make` target) waits for the
# first instead of deleting the half-installed venv under it.
exec 9>"$venv.lock"
flock 9
if [[ ! -f "$venv/.complete" ]]; then
  echo "[gpupool setup] creating $venv (torch from PyPI is several GB: first time only)" >&2
  rm -rf "$venv"
  mkdir -p "$cache/venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip setuptools wheel >&2
  # Install the dependency set (not the project itself: the checkout is put on PYTHONPATH by the
  # Makefile, so several clones can share one environment).
  "$venv/bin/python" - "$here/pyproject.toml" > "$venv/requirements.txt" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = list(project["dependencies"])
for group in ("worker", "models", "sim", "dev"):
    reqs += project["optional-dependencies"].get(group, [])
print("\n".join(reqs))
PY
  "$venv/bin/pip" install --progress-bar on -r "$venv/requirements.txt" >&2
  touch "$venv/.complete"
fi
# The kserve SDK pins protobuf<7, so its client lives in a venv of its own beside this one.
bash "$here/scripts/kserve_env.sh" "$venv" >/dev/null
echo "$venv"
