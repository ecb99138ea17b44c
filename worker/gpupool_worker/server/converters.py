"""Typed converters between the protocol's protobuf messages and the engine's types.

Every defect in a request becomes an :class:`InferenceError` (INVALID_ARGUMENT) naming the tensor:
unknown datatype, negative dimension, raw payload whose size disagrees with shape x datatype, typed
contents of the wrong kind or count, a BYTES payload whose length prefixes do not add up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from gpupool_proto import inference_pb2 as pb
from gpupool_worker.engine.dataplane import IndexEntry
from gpupool_worker.engine.datatypes import DataType, decode_bytes_elements, encode_bytes_elements
from gpupool_worker.engine.errors import InferenceError
from gpupool_worker.engine.statistics import Duration, StatisticsSnapshot
from gpupool_worker.engine.types import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    ParameterValue,
    Tensor,
)

__all__ = [
    "index_to_pb",
    "infer_request_from_pb",
    "infer_response_to_pb",
    "metadata_to_pb",
    "statistics_to_pb",
]

# Which typed-contents field carries each datatype (FP16 has none: it must travel raw).
_CONTENTS_FIELD: dict[DataType, str] = {
    DataType.BOOL: "bool_contents",
    DataType.INT8: "int_contents",
    DataType.INT16: "int_contents",
    DataType.INT32: "int_contents",
    DataType.INT64: "int64_contents",
    DataType.UINT8: "uint_contents",
    DataType.UINT16: "uint_contents",
    DataType.UINT32: "uint_contents",
    DataType.UINT64: "uint64_contents",
    DataType.FP32: "fp32_contents",
    DataType.FP64: "fp64_contents",
    DataType.BYTES: "bytes_contents",
}


_DATATYPES: dict[str, DataType] = {member.value: member for member in DataType}


def _parameter_from_pb(p: pb.InferParameter) -> ParameterValue:
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else ""


def _parameter_to_pb(value: ParameterValue, out: pb.InferParameter) -> None:
    if isinstance(value, bool):
        out.bool_param = value
    elif isinstance(value, int):
        out.int64_param = value
    elif isinstance(value, float):
        out.double_param = value
    else:
        out.string_param = str(value)


def _parameters(params: Mapping[str, pb.InferParameter]) -> dict[str, ParameterValue]:
    return {k: _parameter_from_pb(v) for k, v in params.items()}


def _tensor_data(
    name: str, datatype: DataType, shape: tuple[int, ...], raw: bytes | None,
    contents: pb.InferTensorContents | None,
) -> npt.NDArray[Any]:
    count = math.prod(shape)
    if raw is not None:
        if datatype is DataType.BYTES:
            return decode_bytes_elements(raw, count=count, tensor=name).reshape(shape)
        expected = count * datatype.itemsize
        if len(raw) != expected:
            raise InferenceError.invalid(
                f"input '{name}': raw content has {len(raw)} bytes, but shape "
                f"[{', '.join(map(str, shape))}] of {datatype.value} needs {expected}")
        return np.frombuffer(raw, dtype=datatype.numpy_dtype).reshape(shape)
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InferenceError.invalid(
            f"input '{name}': {datatype.value} data must be sent in raw_input_contents")
    assert contents is not None
    values = getattr(contents, field)
    if len(values) != count:
        raise InferenceError.invalid(
            f"input '{name}': {field} holds {len(values)} elements, shape "
            f"[{', '.join(map(str, shape))}] needs {count}")
    if datatype is DataType.BYTES:
        arr = np.empty(count, dtype=object)
        arr[:] = list(values)
        return arr.reshape(shape)
    try:
        return np.array(values, dtype=datatype.numpy_dtype).reshape(shape)
    except OverflowError:
        raise InferenceError.invalid(
            f"input '{name}': a value in {field} does not fit {datatype.value}") from None


def infer_request_from_pb(request: pb.ModelInferRequest) -> InferRequest:
    raw = request.raw_input_contents
    items = request.inputs
    if raw and len(raw) != len(items):
        raise InferenceError.invalid(
            f"raw_input_contents has {len(raw)} entries for {len(items)} inputs; send every "
            f"input raw or none")
    if not items:
        raise InferenceError.invalid(f"request for model '{request.model_name}' has no inputs")
    tensors = []
    for i, item in enumerate(items):
        name = item.name or f"#{i}"
        datatype = _DATATYPES.get(item.datatype) or DataType.parse(item.datatype, tensor=name)
        shape = tuple(item.shape)
        if shape and min(shape) < 0:
            raise InferenceError.invalid(
                f"input '{name}' has a negative dimension in shape [{', '.join(map(str, shape))}]")
        data = _tensor_data(name, datatype, shape, raw[i] if raw else None,
                            item.contents if not raw else None)
        tensors.append(Tensor(name, datatype, shape, data))
    return InferRequest(
        model_name=request.model_name,
        model_version=request.model_version,
        id=request.id,
        inputs=tuple(tensors),
        requested_outputs=tuple(o.name for o in request.outputs) if request.outputs else (),
        parameters=_parameters(request.parameters) if request.parameters else {},
    )


def infer_response_to_pb(response: InferResponse) -> pb.ModelInferResponse:
    out = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id)
    for key, value in response.parameters.items():
        _parameter_to_pb(value, out.parameters[key])
    for tensor in response.outputs:
        out.outputs.add(name=tensor.name, datatype=tensor.datatype.value, shape=tensor.shape)
        if tensor.datatype is DataType.BYTES:
            out.raw_output_contents.append(encode_bytes_elements(tensor.data))
        else:
            out.raw_output_contents.append(
                np.ascontiguousarray(tensor.data, dtype=tensor.datatype.numpy_dtype).tobytes())
    return out


def metadata_to_pb(meta: ModelMetadata) -> pb.ModelMetadataResponse:
    out = pb.ModelMetadataResponse(name=meta.name, versions=meta.versions, platform=meta.platform)
    for spec in meta.inputs:
        out.inputs.add(name=spec.name, datatype=spec.datatype.value, shape=spec.shape)
    for spec in meta.outputs:
        out.outputs.add(name=spec.name, datatype=spec.datatype.value, shape=spec.shape)
    return out


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def statistics_to_pb(snapshots: list[StatisticsSnapshot]) -> pb.ModelStatisticsResponse:
    out = pb.ModelStatisticsResponse()
    for s in snapshots:
        stat = out.model_stats.add(
            name=s.name, version=s.version, last_inference=s.last_inference_ms,
            inference_count=s.inference_count, execution_count=s.execution_count)
        stat.inference_stats.CopyFrom(pb.InferStatistics(
            success=_duration(s.success), fail=_duration(s.fail), queue=_duration(s.queue),
            compute_input=_duration(s.compute_input), compute_infer=_duration(s.compute_infer),
            compute_output=_duration(s.compute_output)))
        for b in s.batch_stats:
            stat.batch_stats.add(
                batch_size=b.batch_size, compute_input=_duration(b.compute_input),
                compute_infer=_duration(b.compute_infer), compute_output=_duration(b.compute_output))
        stat.cost.CopyFrom(pb.CostStatistics(
            price_per_hour_usd=s.cost.price_per_hour_usd, device_share=s.cost.device_share,
            busy_ns=s.busy_ns, total_usd=s.cost_total_usd,
            per_inference_usd=s.cost_per_inference_usd, accelerator=s.cost.accelerator,
            mig_profile=s.cost.mig_profile,
            per_inference_busy_window_usd=s.figures.busy_window,
            per_inference_idle_charged_window_usd=s.figures.idle_charged_window,
            per_inference_idle_charged_usd=s.figures.idle_charged_lifetime,
            window_seconds=s.figures.window_s, replica_seconds=s.figures.replica_s,
            window_inference_count=s.figures.window_inferences))
    return out


def index_to_pb(entries: list[IndexEntry]) -> pb.RepositoryIndexResponse:
    out = pb.RepositoryIndexResponse()
    for e in entries:
        out.models.add(name=e.name, version=e.version, state=e.state, reason=e.reason)
    return out
