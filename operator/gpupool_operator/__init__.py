"""gpupool: the Kubernetes operator that packs ML inference onto heterogeneous GPU, MIG and CPU pools."""

__version__ = "0.1.0"  # the same as pyproject.toml and the chart's appVersion (a test checks)
