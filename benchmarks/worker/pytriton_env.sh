#!/usr/bin/env bash
# The PyTriton peer of bench_engines.py in a venv of its own beside the main one:
# nvidia-pytriton 0.7 pins numpy<2 and tritonclient~=2.50, which the main environment cannot take
# (it pins protobuf>=7 and tritonclient<2.42). It needs no torch: it runs the same ONNX graph with
# onnxruntime that gpupool's CPU engine runs.
#   bash benchmarks/worker/pytriton_env.sh VENV      -> VENV-pytriton/bin/python
set -euo pipefail
base="${1:?usage: pytriton_env.sh MAIN_VENV}"
target="${PYTRITON_VENV:-${base}-pytriton}"
if [[ -x "$target/bin/python" ]] && "$target/bin/python" -c "import pytriton, onnxruntime, tokenizers" 2>/dev/null; then
  echo "$target"; exit 0
fi
# PYTRITON_BASE_PYTHON: the interpreter to build it from (default the main venv's base). Triton's
# Python backend stub loads libpython3.X.so: with pyenv's 3.11.7 (no shared library) it found
# Debian's 3.11.2, whose C modules lack what 3.11.7's stdlib calls (AttributeError:
# '_recursion_count'); a pyenv 3.12 has its own libpython3.12.so, which the server script puts on
# LD_LIBRARY_PATH.
py="${PYTRITON_BASE_PYTHON:-$("$base/bin/python" -c 'import sys; print(sys.base_prefix)')/bin/python3}"
"$py" -m venv "$target"
"$target/bin/python" -m pip install --quiet "nvidia-pytriton==0.7.0" "onnxruntime>=1.20,<1.24" "tokenizers>=0.15" "numpy<2" >&2
echo "$target"
