"""Sentence embeddings as a served model: UTF-8 text (BYTES) in, one embedding per text out.

Tokenization (WordPiece, from the model's ``tokenizer.json``) happens before a request is queued,
off the compute thread, and cuts each text first to what its tokens can use (:mod:`.tokens`, shared
with the torch-free ONNX Runtime engine). Batches are padded
to their longest row. Called directly with text (``execute({"text": ...})``), ``prepare``
tokenizes itself.

On a CUDA device the eager and Triton engines replay CUDA graphs for small batches (``cuda_graphs``,
on by default; see :mod:`gpupool_worker.engine.graphs`): captured at warm-up for every bucket the
model's ``max_batch_size`` and ``max_sequence_length`` can reach. The compile engine keeps its own
path (torch.compile's dynamic-shape program is not captured here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from gpupool_worker.engine.device import DeviceLike
from gpupool_worker.engine.graphs import GraphBuckets, GraphedForward
from gpupool_worker.engine.model import Arrays
from gpupool_worker.engine.models.encoder import Encoder, build_ops, compiled
from gpupool_worker.engine.models.tokens import INPUT, OUTPUT, TOKEN_ARRAYS, TextEncoder, char_bound, embedding_metadata
from gpupool_worker.engine.precision import EngineKind, Precision
from gpupool_worker.engine.selection import PathDispatch, pick_paths

__all__ = ["INPUT", "OUTPUT", "SentenceEmbeddingModel", "char_bound"]

_TOKEN_ARRAYS = TOKEN_ARRAYS


class SentenceEmbeddingModel(TextEncoder):
    def __init__(
        self, name: str, version: str, weights: Path, *, engine: EngineKind, precision: Precision,
        device: DeviceLike, max_batch_size: int, max_sequence_length: int = 256,
        normalize: bool = True, compile_backend: str = "inductor", cuda_graphs: bool = True,
        graph_buckets: GraphBuckets | None = None,
    ) -> None:
        device = torch.device(str(device))
        encoder = Encoder.from_directory(weights, ops=build_ops(engine), precision=precision,
                                         device=device, normalize=normalize)
        super().__init__(embedding_metadata(name, version, encoder.config.hidden_size, max_batch_size))
        self.encoder = encoder
        self.engine = engine
        self.precision = precision
        self.device = device
        self.graphs: GraphedForward | None = None
        self.dispatch: PathDispatch | None = None  # triton on CUDA: the faster path per batch size
        self._cuda_graphs, self._graph_buckets = cuda_graphs, graph_buckets
        if engine is EngineKind.COMPILE:
            self._forward = compiled(encoder.forward, backend=compile_backend)
        elif device.type == "cuda":
            self.graphs = GraphedForward(encoder.forward, device, buckets=graph_buckets,
                                         enabled=cuda_graphs, name=name)
            self._forward = self.graphs
        else:
            self._forward = encoder.forward
        self._load_tokenizer(weights, min(max_sequence_length, encoder.config.max_position))

    def prepare(self, inputs: Arrays) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if INPUT in inputs:  # called with text (warm-up, benchmarks): tokenize here
            inputs = self.tokenize(inputs).arrays
        ids, mask, types = (torch.from_numpy(np.ascontiguousarray(inputs[k])) for k in _TOKEN_ARRAYS)
        dev = self.device
        return (ids.to(dev, non_blocking=True), mask.to(dev, non_blocking=True),
                types.to(dev, non_blocking=True))

    def forward(self, prepared: Any) -> torch.Tensor:
        with torch.inference_mode():
            if self.dispatch is not None:
                out: torch.Tensor = self.dispatch(int(prepared[0].shape[0]), *prepared)
            else:
                out = self._forward(*prepared)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return out

    def finish(self, raw: Any) -> dict[str, npt.NDArray[Any]]:
        return {OUTPUT: raw.float().cpu().numpy()}

    def warmup(self) -> None:
        sample = np.array([b"warm up the encoder", b"a second, longer sentence to warm up with"],
                          dtype=object)
        # a batch of one row, then of two: torch.compile specializes size 1, so with it both
        # graphs are built here rather than on a first request
        for rows in sorted({1, max(1, min(2, self.max_batch_size or 1))}):
            self.execute({INPUT: sample[:rows]})
        if self.graphs is not None:
            self.graphs.capture(self.max_batch_size or None, self.max_tokens)
        if self.engine is EngineKind.TRITON and self.device.type == "cuda":
            self._select_paths()

    def _select_paths(self) -> None:
        """Time the Triton kernels against eager PyTorch (each with CUDA graphs where they are on)
        at a few batch sizes, and serve each batch size with the faster (engine.selection): the
        kernels must never make a small batch slower than eager would run it."""
        import copy
        import time as _time

        from gpupool_worker.engine.models.encoder import TorchOps

        eager = copy.copy(self.encoder)
        eager.ops = TorchOps()
        eager_forward: Any = eager.forward
        if self.graphs is not None and self.graphs.enabled:
            eager_forward = GraphedForward(eager.forward, self.device, buckets=self._graph_buckets,
                                           enabled=self._cuda_graphs, name=f"{self.name}-eager")
            eager_forward.capture(self.max_batch_size or None, self.max_tokens)
        paths = {"triton": self._forward, "eager": eager_forward}
        timings: dict[int, dict[str, float]] = {}
        limit = self.max_batch_size or 1
        for rows in sorted({b for b in (1, 8, 32, 128, limit) if b <= limit}):
            sample = self.tokenize({INPUT: np.array([b"a sentence of about a dozen tokens to time"] * rows,
                                                    dtype=object)}).arrays
            prepared = self.prepare(sample)
            for name, fn in paths.items():
                with torch.inference_mode():
                    fn(*prepared)
                    torch.cuda.synchronize(self.device)
                    t0 = _time.perf_counter()
                    for _ in range(10):
                        fn(*prepared)
                    torch.cuda.synchronize(self.device)
                timings.setdefault(rows, {})[name] = (_time.perf_counter() - t0) / 10
        self.dispatch = PathDispatch(paths, pick_paths(timings, preferred="triton"))
        self.path_timings = timings

    def describe(self) -> dict[str, str]:
        facts = {"engine": self.engine.value, "precision": self.precision.value, "device": str(self.device)}
        if self.graphs is not None:
            facts["cuda_graphs"] = self.graphs.describe()
        if self.dispatch is not None:
            facts["paths"] = self.dispatch.describe()
        return facts
