"""The runtime contract every served model meets, whatever framework or kernels sit underneath.

A model executes one *batch*: a mapping from input name to an array whose first dimension is the
batch (for models that batch). Execution is split into three timed phases, as Triton reports them:
``prepare`` (host to device, tokenization), ``forward`` (the device work, synchronized) and
``finish`` (device to host). The batcher runs ``execute`` on a worker thread, never on the event loop.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gpupool_worker.engine.types import ModelMetadata

__all__ = ["Arrays", "Execution", "Model"]

Arrays = Mapping[str, npt.NDArray[Any]]


@dataclass(frozen=True, slots=True)
class Execution:
    outputs: dict[str, npt.NDArray[Any]]
    input_ns: int
    infer_ns: int
    output_ns: int

    @property
    def busy_ns(self) -> int:
        return self.input_ns + self.infer_ns + self.output_ns


class Model(abc.ABC):
    """A loaded, servable model. Subclasses implement the three phases."""

    def __init__(self, metadata: ModelMetadata) -> None:
        self.metadata = metadata

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def max_batch_size(self) -> int:
        return self.metadata.max_batch_size

    @abc.abstractmethod
    def prepare(self, inputs: Arrays) -> Any:
        """Turn host arrays into whatever ``forward`` consumes (tensors on the model's device)."""

    @abc.abstractmethod
    def forward(self, prepared: Any) -> Any:
        """Run the model; must return only when the device work is done."""

    @abc.abstractmethod
    def finish(self, raw: Any) -> dict[str, npt.NDArray[Any]]:
        """Turn ``forward``'s result into host arrays named as the model's outputs."""

    def check(self, inputs: Arrays) -> None:  # noqa: B027 - optional hook, no-op by default
        """Refuse inputs the model cannot take (raise InferenceError); runs before queueing."""

    def warmup(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Run once on representative input so the first request pays no compile or allocation."""

    def execute(self, inputs: Arrays) -> Execution:
        t0 = time.perf_counter_ns()
        prepared = self.prepare(inputs)
        t1 = time.perf_counter_ns()
        raw = self.forward(prepared)
        t2 = time.perf_counter_ns()
        outputs = self.finish(raw)
        t3 = time.perf_counter_ns()
        return Execution(outputs, t1 - t0, t2 - t1, t3 - t2)

    def describe(self) -> dict[str, str]:
        """Free-form facts for logs and metadata (engine, precision, device)."""
        return {}


def rows_of(inputs: Arrays) -> int:
    """The batch size of a batch of inputs (first dimension of any input)."""
    first = next(iter(inputs.values()))
    return int(np.shape(first)[0])
