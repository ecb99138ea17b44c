"""The worker's engine: model repository, runtimes, kernels, dynamic batcher, costing and metrics.

Nothing in this package imports gRPC (an import-linter contract enforces it): transports convert
their messages into :mod:`gpupool_worker.engine.types` and call
:class:`gpupool_worker.engine.dataplane.DataPlane`. Submodules are imported explicitly, so that
using one piece (the kernels on a GPU box, the cost model in a benchmark) pulls in no others.
"""
