"""gpupool: the Kubernetes operator that packs ML inference onto heterogeneous GPU, MIG and CPU pools."""
