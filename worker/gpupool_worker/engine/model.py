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

__all__ = ["Arrays", "Execution", "Model", "TokenBatch"]

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


@dataclass(frozen=True, slots=True)
class TokenBatch:
    """Rows of token ids (and whatever else a text model feeds its encoder), each array
    ``[rows, width]`` zero-padded on the right, with each row's real length. What a model that
    :attr:`Model.tokenizes` returns from :meth:`Model.tokenize`; the batcher budgets, buckets,
    splits and pads these, then hands ``arrays`` to :meth:`Model.execute`."""

    arrays: dict[str, npt.NDArray[Any]]
    lengths: npt.NDArray[np.int64]

    @property
    def rows(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def width(self) -> int:
        return int(self.lengths.max()) if self.rows else 0

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays.values())

    def take(self, start: int, stop: int) -> TokenBatch:
        """Rows ``start:stop``, trimmed to their own longest row."""
        lengths = self.lengths[start:stop]
        width = int(lengths.max()) if lengths.size else 0
        return TokenBatch({k: v[start:stop, :width] for k, v in self.arrays.items()}, lengths)

    @staticmethod
    def concatenate(parts: list[TokenBatch]) -> TokenBatch:
        """One batch of every part's rows, padded with zeros to the longest."""
        if len(parts) == 1:
            return parts[0]
        width = max(p.width for p in parts)
        arrays = {}
        for name in parts[0].arrays:
            pieces = [p.arrays[name] for p in parts]
            arrays[name] = np.concatenate(
                [a if a.shape[1] == width else np.pad(a[:, :width], ((0, 0), (0, width - a.shape[1])))
                 for a in pieces], axis=0)
        return TokenBatch(arrays, np.concatenate([p.lengths for p in parts]))


class Model(abc.ABC):
    """A loaded, servable model. Subclasses implement the three phases.

    A text model may also set :attr:`tokenizes` and implement :meth:`tokenize`: the batcher then
    tokenizes each request off the compute thread (on the event loop when it is small, else on a
    tokenizer thread) before queueing it, so the compute thread only runs the encoder, and batches
    are sized by tokens (with length buckets) rather than by rows alone."""

    tokenizes = False
    max_tokens = 0
    """The longest row (in tokens) a tokenizing model runs; 0 for other models."""

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

    def tokenize(self, inputs: Arrays) -> TokenBatch:
        """The request's text as token rows (raise InferenceError for text it cannot take)."""
        raise NotImplementedError(f"model {self.name} does not tokenize")

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
