"""Tensor programs (TorchScript ``.pt``, torch.export ``.pt2``): their tensors and their precision.

A torch.export program carries its own signature: user input names, and for every input and
output a dtype and a shape whose symbolic dimensions (``s77``) are the dynamic ones. That is the
metadata served (``-1`` for a dynamic dimension), so a ``.pt2`` needs no declaration; declared
tensors, when given, must agree with it. A TorchScript archive carries no dtypes or shapes, so
its tensors must be declared (the pool's ``tensors`` or a ``model.json`` beside it).

Reduced precision (fp16/bf16) casts the program's floating parameters and its float inputs, and
casts float outputs back to what the metadata says; integer tensors pass untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy.typing as npt
import torch

from gpupool_worker.engine.datatypes import DataType
from gpupool_worker.engine.model import Arrays
from gpupool_worker.engine.models.tensor_program import TensorProgramModel, _owned
from gpupool_worker.engine.types import ModelMetadata, TensorSpec
from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["TORCH_TYPES", "CastProgramModel", "exported_signature"]

TORCH_TYPES = {
    torch.float32: DataType.FP32, torch.float16: DataType.FP16, torch.float64: DataType.FP64,
    torch.int8: DataType.INT8, torch.int16: DataType.INT16, torch.int32: DataType.INT32,
    torch.int64: DataType.INT64, torch.uint8: DataType.UINT8, torch.bool: DataType.BOOL,
    torch.bfloat16: DataType.FP32,  # carried as FP32 on the wire
}
_CAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _spec(name: str, value: Any, what: str) -> TensorSpec:
    dtype = TORCH_TYPES.get(value.dtype)
    if dtype is None:
        raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: tensor {name!r} has dtype {value.dtype}, which the "
                          "KServe v2 protocol cannot carry")
    return TensorSpec(name, dtype, tuple(d if isinstance(d, int) else -1 for d in value.shape))


def exported_signature(path: Path, what: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The inputs and outputs a ``.pt2`` program declares (outputs named ``output_<i>``)."""
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # torch raises several types for "not an export archive"
        raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: {path.name} is not a torch.export archive: "
                          f"{' '.join(str(exc).split())[:200]}") from None
    user_inputs = set(program.graph_signature.user_inputs)
    inputs, outputs = [], []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            inputs.append(_spec(node.name, node.meta["val"], what))
        elif node.op == "output":
            results = node.args[0] if isinstance(node.args[0], tuple | list) else (node.args[0],)
            outputs = [_spec(f"output_{i}", r.meta["val"], what) for i, r in enumerate(results)]
    return tuple(inputs), tuple(outputs)


class CastProgramModel(TensorProgramModel):
    """A tensor program run at fp16 or bf16: parameters cast once, float tensors cast per batch."""

    def __init__(self, metadata: ModelMetadata, program: Any, *, device: torch.device, precision: str,
                 compile_program: bool = False) -> None:
        self.dtype = _CAST[precision]
        program = program.to(self.dtype)
        super().__init__(metadata, program, device=device, compile_program=compile_program)

    def prepare(self, inputs: Arrays) -> list[torch.Tensor]:
        out = []
        for spec in self.metadata.inputs:
            t = torch.from_numpy(_owned(inputs[spec.name])).to(self.device)
            out.append(t.to(self.dtype) if t.is_floating_point() else t)
        return out

    def finish(self, raw: Any) -> dict[str, npt.NDArray[Any]]:
        outputs = raw if isinstance(raw, tuple | list) else (raw,)
        return super().finish(tuple(t.float() if t.is_floating_point() else t for t in outputs))
