# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target operator -t gpupool-operator .   (no torch: the operator never imports it)
#   docker build --target worker   -t gpupool-worker .     (torch, triton, the built-in MiniLM model)
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY worker ./worker
COPY proto ./proto

FROM base AS operator
RUN pip install . && rm -rf /src
USER 65532:65532
ENTRYPOINT ["gpupool", "operator"]

FROM base AS worker
RUN pip install ".[worker,models]" && rm -rf /src
USER 65532:65532
ENV HF_HUB_OFFLINE=1
EXPOSE 8001 8002
ENTRYPOINT ["gpupool-worker"]
