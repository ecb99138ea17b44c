"""Transport-neutral request, response and metadata types: what converters produce and consume.

Converters (``gpupool_worker.server.converters``) turn protobuf messages into these and back; the
engine works only with them, so it can be driven by gRPC, HTTP or a benchmark loop alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gpupool_worker.engine.datatypes import DataType

__all__ = [
    "InferRequest",
    "InferResponse",
    "ModelMetadata",
    "ParameterValue",
    "Tensor",
    "TensorSpec",
]

ParameterValue = bool | int | float | str


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model's declared input or output. ``-1`` marks a variable dimension.

    For a model that batches, the first dimension is the batch dimension and is always ``-1``
    (Triton reports it the same way in model metadata).
    """

    name: str
    datatype: DataType
    shape: tuple[int, ...]

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(
            want in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        )


@dataclass(frozen=True, slots=True)
class Tensor:
    """A named tensor. ``data`` has exactly ``shape``; BYTES data is an object array of ``bytes``."""

    name: str
    datatype: DataType
    shape: tuple[int, ...]
    data: npt.NDArray[np.generic]


@dataclass(frozen=True, slots=True)
class InferRequest:
    model_name: str
    inputs: tuple[Tensor, ...]
    model_version: str = ""
    id: str = ""
    requested_outputs: tuple[str, ...] = ()
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: tuple[Tensor, ...]
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
