"""Check a request against its model's declared inputs and outputs, before it waits in any queue.

A purely computational module. Every refusal is an INVALID_ARGUMENT naming the tensor and saying
what was expected, so a client can fix the request from the message alone.
"""

from __future__ import annotations

from typing import Any

import numpy.typing as npt

from gpupool_worker.engine.errors import InferenceError
from gpupool_worker.engine.types import InferRequest, ModelMetadata

__all__ = ["validate"]


def _fmt(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def validate(request: InferRequest, meta: ModelMetadata) -> tuple[dict[str, npt.NDArray[Any]], int]:
    """Return the inputs by name and the request's batch rows (1 for a model that does not batch)."""
    declared = {spec.name: spec for spec in meta.inputs}
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
                f"input '{tensor.name}' has datatype {tensor.datatype.value}, model '{meta.name}' "
                f"expects {spec.datatype.value}")
        if not spec.accepts_shape(tensor.shape):
            raise InferenceError.invalid(
                f"input '{tensor.name}' has shape {_fmt(tensor.shape)}, model '{meta.name}' expects "
                f"{_fmt(spec.shape)} (-1: any size)")
        if any(d < 0 for d in tensor.shape):
            raise InferenceError.invalid(f"input '{tensor.name}' has a negative dimension")
        seen[tensor.name] = tensor.data
    missing = [name for name in declared if name not in seen]
    if missing:
        raise InferenceError.invalid(
            f"missing input {', '.join(repr(m) for m in missing)} for model '{meta.name}'")
    known_outputs = {spec.name for spec in meta.outputs}
    for name in request.requested_outputs:
        if name not in known_outputs:
            raise InferenceError.invalid(
                f"requested output '{name}' is not an output of model '{meta.name}' "
                f"(outputs: {', '.join(sorted(known_outputs))})")
    rows = 1
    if meta.max_batch_size > 0:
        batch_dims = {t.shape[0] for t in request.inputs}
        if len(batch_dims) != 1:
            raise InferenceError.invalid(
                "inputs disagree on the batch dimension: "
                + ", ".join(f"'{t.name}' has {t.shape[0]}" for t in request.inputs))
        rows = batch_dims.pop()
        if rows == 0:
            raise InferenceError.invalid(f"batch of 0 rows for model '{meta.name}'")
        if rows > meta.max_batch_size:
            raise InferenceError.invalid(
                f"batch of {rows} rows exceeds max_batch_size {meta.max_batch_size} of model "
                f"'{meta.name}'")
    return seen, rows
