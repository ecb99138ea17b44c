"""Models that are compiled programs over tensors: TorchScript (``model.pt``) and torch.export
(``model.pt2``) archives. Their inputs and outputs are declared in the repository's ``model.json``;
inputs are passed positionally in that order, outputs come back as a tensor or a tuple of tensors.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from gpupool_worker.engine.model import Arrays, Model
from gpupool_worker.engine.types import ModelMetadata

__all__ = ["TensorProgramModel", "torchscript_allowed"]


@contextlib.contextmanager
def torchscript_allowed() -> Iterator[None]:
    """Silence torch's TorchScript deprecation while we script or load an archive on purpose: users
    still ship TorchScript models. Recent torch says it with a FutureWarning, 2.11 (the GPU
    machine's) with a DeprecationWarning; both would be errors under the tests' warning filter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _owned(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``array`` if torch may wrap it as is (C-contiguous, writable), else a copy that is: arrays
    read from a request's raw bytes are read-only views of the message."""
    flags = array.flags
    return array if flags.c_contiguous and flags.writeable else np.array(array, order="C")


class TensorProgramModel(Model):
    def __init__(self, metadata: ModelMetadata, program: Any, *, device: torch.device,
                 compile_program: bool = False) -> None:
        super().__init__(metadata)
        self.device = device
        self._on_cpu = device.type == "cpu"
        self._input_names = tuple(spec.name for spec in metadata.inputs)
        self._program = torch.compile(program, dynamic=True) if compile_program else program

    @classmethod
    def torchscript(cls, metadata: ModelMetadata, path: Path, *, device: torch.device) -> TensorProgramModel:
        with torchscript_allowed():
            program = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
        program.eval()
        return cls(metadata, program, device=device)

    @classmethod
    def exported(cls, metadata: ModelMetadata, path: Path, *, device: torch.device,
                 compile_program: bool = False) -> TensorProgramModel:
        program = torch.export.load(str(path)).module()
        program.to(device)
        return cls(metadata, program, device=device, compile_program=compile_program)

    def prepare(self, inputs: Arrays) -> list[torch.Tensor]:
        tensors = [torch.from_numpy(_owned(inputs[name])) for name in self._input_names]
        return tensors if self._on_cpu else [t.to(self.device) for t in tensors]

    def forward(self, prepared: Any) -> Any:
        with torch.inference_mode():
            out = self._program(*prepared)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return out

    def finish(self, raw: Any) -> dict[str, npt.NDArray[Any]]:
        outputs = raw if isinstance(raw, tuple | list) else (raw,)
        if len(outputs) != len(self.metadata.outputs):
            raise RuntimeError(f"program returned {len(outputs)} outputs, model.json declares "
                               f"{len(self.metadata.outputs)}")
        return {spec.name: (tensor.detach() if self._on_cpu else tensor.detach().cpu()).numpy().astype(
                    spec.datatype.numpy_dtype, copy=False)
                for spec, tensor in zip(self.metadata.outputs, outputs, strict=True)}

    def warmup(self) -> None:
        rows = 1 if self.max_batch_size > 0 else None
        sample: dict[str, npt.NDArray[Any]] = {}
        for spec in self.metadata.inputs:
            shape = [d if d > 0 else 1 for d in spec.shape]
            if rows is not None:
                shape[0] = rows
            sample[spec.name] = np.zeros(shape, dtype=spec.datatype.numpy_dtype)
        self.execute(sample)

    def describe(self) -> dict[str, str]:
        return {"device": str(self.device)}
