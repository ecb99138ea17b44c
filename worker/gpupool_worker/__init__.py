"""gpupool's inference worker: KServe v2 / Triton gRPC protocol over a dynamic batcher and
PyTorch / Triton-kernel engines, with cost per inference measured from device busy time.

Layers: ``server`` (gRPC servicer, converters, app) sits on ``engine`` (data plane, batcher,
repository, runtimes, kernels, costing), which imports nothing from gRPC.
"""

__version__ = "0.1.0"
