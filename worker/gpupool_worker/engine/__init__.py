"""The worker's engine: model repository, runtimes, kernels, dynamic batcher, costing and metrics.

Nothing in this package imports gRPC (an import-linter contract enforces it): transports convert
their messages into :mod:`gpupool_worker.engine.types` and call :class:`DataPlane`.
"""

from gpupool_worker.engine.costing import CostModel
from gpupool_worker.engine.dataplane import DataPlane
from gpupool_worker.engine.errors import ErrorKind, InferenceError
from gpupool_worker.engine.metrics import WorkerMetrics
from gpupool_worker.engine.repository import ModelRepository, RuntimeDefaults

__all__ = [
    "CostModel",
    "DataPlane",
    "ErrorKind",
    "InferenceError",
    "ModelRepository",
    "RuntimeDefaults",
    "WorkerMetrics",
]
