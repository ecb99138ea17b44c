"""A small real model for batcher and data-plane tests: doubles its input, and can be held shut.

Holding it shut (``gate.clear()``) keeps one batch executing so the tests can build a queue
deterministically, without sleeping and without timing assertions.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from gpupool_worker.engine.datatypes import DataType
from gpupool_worker.engine.model import Arrays, Model
from gpupool_worker.engine.types import ModelMetadata, TensorSpec


class GateModel(Model):
    def __init__(self, name: str = "gate", *, max_batch_size: int = 8, width: int = -1) -> None:
        super().__init__(ModelMetadata(
            name=name, versions=("1",), platform="test",
            inputs=(TensorSpec("x", DataType.FP32, (-1, width)),),
            outputs=(TensorSpec("y", DataType.FP32, (-1, width)),),
            max_batch_size=max_batch_size))
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)
        self.batches: list[int] = []
        self.fail_when_negative = True

    def prepare(self, inputs: Arrays) -> npt.NDArray[Any]:
        self.entered.release()
        self.gate.wait(30)
        return np.asarray(inputs["x"])

    def forward(self, prepared: Any) -> Any:
        if self.fail_when_negative and (prepared < 0).any():
            raise ValueError("negative input")
        self.batches.append(int(prepared.shape[0]))
        return prepared * 2

    def finish(self, raw: Any) -> dict[str, npt.NDArray[Any]]:
        return {"y": raw.astype(np.float32)}
