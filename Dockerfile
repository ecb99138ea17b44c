# syntax=docker/dockerfile:1
# Two images from one file, built with Docker, or with podman/buildah and no registry at all
# (tests/images/build_images.sh shows how):
#   build --target operator -t gpupool-operator .   the operator: no torch, never imports it
#   build --target worker   -t gpupool-worker .     the worker and the built-in MiniLM model, on CPU
#   build --target worker --build-arg TORCH_INDEX_URL= -t gpupool-worker:cuda .
#                                                   CUDA variant: PyPI's torch, with NVIDIA's CUDA
#                                                   libraries (several GB more); same entrypoint
# Final images hold a virtualenv of the dependencies and the installed project only: no compiler, no pip cache,
# no build tree (bytecode is compiled at build time: the root filesystem is read-only at run time).
# Both run as UID 65532.
ARG PYTHON_IMAGE=python:3.11-slim
# A current resolver (the base's own pip may be years old and backtrack for a long time).
ARG PIP_VERSION=26.3

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

FROM ${PYTHON_IMAGE} AS worker-deps
ARG PIP_VERSION
# PyTorch's CPU-only wheels by default (no CUDA libraries). Empty = PyPI's torch, which bundles CUDA.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; x = p['optional-dependencies']; print(*p['dependencies'], *x['worker'], *x['models'], sep='\n')" > /tmp/requirements.txt \
    && python3 -m venv /opt/gpupool && /opt/gpupool/bin/pip install "pip==${PIP_VERSION}" \
    && if [ -n "$TORCH_INDEX_URL" ]; then /opt/gpupool/bin/pip install --index-url "$TORCH_INDEX_URL" "torch>=2.4"; fi \
    && /opt/gpupool/bin/pip install -r /tmp/requirements.txt

FROM worker-deps AS worker-app
COPY README.md ./
COPY operator ./operator
COPY worker ./worker
COPY proto ./proto
RUN /opt/gpupool/bin/pip install --no-deps --target /opt/app /src

FROM worker-deps AS worker-venv
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

FROM runtime AS worker
COPY --from=worker-venv /opt/gpupool /opt/gpupool
COPY --from=worker-app /opt/app /opt/app
# Model weights come from the image (builtin://) or the pod's cache volume, never from a hub at start.
ENV HF_HUB_OFFLINE=1 TRITON_CACHE_DIR=/tmp/triton TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
EXPOSE 8001 8002
ENTRYPOINT ["gpupool-worker"]
