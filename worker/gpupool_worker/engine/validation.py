"""Check a request against its model's declared inputs and outputs, before it waits in any queue.

A purely computational module. Every refusal is an INVALID_ARGUMENT naming the tensor and saying
what was expected, so a client can fix the request from the message alone.
"""

from __future__ import annotations

from typing import Any

import numpy.typing as npt

from gpupool_worker.engine.errors import InferenceError
from gpupool_worker.engine.types import InferRequest, ModelMetadata

__all__ = ["Validator", "validate"]


def _fmt(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def validate(request: InferRequest, meta: ModelMetadata) -> tuple[dict[str, npt.NDArray[Any]], int]:
    """Return the inputs by name and the request's batch rows (1 for a model that does not batch)."""
    return Validator(meta)(request)


class Validator:
    """:func:`validate` for one model, with its declarations looked up once."""

    __slots__ = ("_declared", "_meta", "_outputs")

    def __init__(self, meta: ModelMetadata) -> None:
        self._meta = meta
        self._declared = {spec.name: spec for spec in meta.inputs}
        self._outputs = frozenset(spec.name for spec in meta.outputs)

    def __call__(self, request: InferRequest) -> tuple[dict[str, npt.NDArray[Any]], int]:
        meta, declared = self._meta, self._declared
        seen: dict[str, npt.NDArray[Any]] = {}
        for tensor in request.inputs:
            if tensor.name in seen:
                raise InferenceError.invalid(f"input '{tensor.name}' appears more than once")
            spec = declared.get(tensor.name)
            if spec is None:
                raise InferenceError.invalid(
                    f"unexpected input '{tensor.name}' for model '{meta.name}', which takes "
                    + ", ".join(f"'{n}'" for n in declared))
            if tensor.datatype is not spec.datatype:
                raise InferenceError.invalid(
                    f"input '{tensor.name}' has datatype {tensor.datatype.value}, model "
                    f"'{meta.name}' expects {spec.datatype.value}")
            if not spec.accepts_shape(tensor.shape):
                raise InferenceError.invalid(
                    f"input '{tensor.name}' has shape {_fmt(tensor.shape)}, model '{meta.name}' "
                    f"expects {_fmt(spec.shape)} (-1: any size)")
            if tensor.shape and min(tensor.shape) < 0:
                raise InferenceError.invalid(f"input '{tensor.name}' has a negative dimension")
            seen[tensor.name] = tensor.data
        if len(seen) != len(declared):
            missing = [name for name in declared if name not in seen]
            raise InferenceError.invalid(
                f"missing input {', '.join(repr(m) for m in missing)} for model '{meta.name}'")
        for name in request.requested_outputs:
            if name not in self._outputs:
                raise InferenceError.invalid(
                    f"requested output '{name}' is not an output of model '{meta.name}' "
                    f"(outputs: {', '.join(sorted(self._outputs))})")
        rows = 1
        if meta.max_batch_size > 0:
            rows = request.inputs[0].shape[0]
            if any(t.shape[0] != rows for t in request.inputs):
                raise InferenceError.invalid(
                    "inputs disagree on the batch dimension: "
                    + ", ".join(f"'{t.name}' has {t.shape[0]}" for t in request.inputs))
            if rows == 0:
                raise InferenceError.invalid(f"batch of 0 rows for model '{meta.name}'")
            if rows > meta.max_batch_size:
                raise InferenceError.invalid(
                    f"batch of {rows} rows exceeds max_batch_size {meta.max_batch_size} of model "
                    f"'{meta.name}'")
        return seen, rows
