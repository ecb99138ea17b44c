"""Sentence embeddings as a served model: UTF-8 text (BYTES) in, one embedding per text out.

Tokenization (WordPiece, from the model's ``tokenizer.json``) is part of the model's ``prepare``
phase, on the host; each batch is padded to its longest text, truncated at ``max_sequence_length``.

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
from tokenizers import Tokenizer

from gpupool_worker.engine.datatypes import DataType
from gpupool_worker.engine.errors import InferenceError
from gpupool_worker.engine.graphs import GraphBuckets, GraphedForward
from gpupool_worker.engine.model import Arrays, Model
from gpupool_worker.engine.models.encoder import Encoder, build_ops, compiled
from gpupool_worker.engine.precision import EngineKind, Precision
from gpupool_worker.engine.types import ModelMetadata, TensorSpec

__all__ = ["SentenceEmbeddingModel"]

INPUT = "text"
OUTPUT = "embedding"


class SentenceEmbeddingModel(Model):
    def __init__(
        self, name: str, version: str, weights: Path, *, engine: EngineKind, precision: Precision,
        device: torch.device, max_batch_size: int, max_sequence_length: int = 256,
        normalize: bool = True, compile_backend: str = "inductor", cuda_graphs: bool = True,
        graph_buckets: GraphBuckets | None = None,
    ) -> None:
        encoder = Encoder.from_directory(weights, ops=build_ops(engine), precision=precision,
                                         device=device, normalize=normalize)
        super().__init__(ModelMetadata(
            name=name, versions=(version,), platform="gpupool_sentence_embedding",
            inputs=(TensorSpec(INPUT, DataType.BYTES, (-1,)),),
            outputs=(TensorSpec(OUTPUT, DataType.FP32, (-1, encoder.config.hidden_size)),),
            max_batch_size=max_batch_size,
        ))
        self.encoder = encoder
        self.engine = engine
        self.precision = precision
        self.device = device
        self.max_tokens = min(max_sequence_length, encoder.config.max_position)
        self.graphs: GraphedForward | None = None
        if engine is EngineKind.COMPILE:
            self._forward = compiled(encoder.forward, backend=compile_backend)
        elif device.type == "cuda":
            self.graphs = GraphedForward(encoder.forward, device, buckets=graph_buckets,
                                         enabled=cuda_graphs, name=name)
            self._forward = self.graphs
        else:
            self._forward = encoder.forward
        self.tokenizer = Tokenizer.from_file(str(weights / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_tokens)
        pad_id = self.tokenizer.token_to_id("[PAD]")
        self.tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")

    def check(self, inputs: Arrays) -> None:
        for i, element in enumerate(inputs[INPUT].reshape(-1)):
            try:
                bytes(element).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InferenceError.invalid(
                    f"tensor '{INPUT}': element {i} is not valid UTF-8 ({exc.reason} at byte "
                    f"{exc.start})") from None

    def prepare(self, inputs: Arrays) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        texts = [bytes(t).decode("utf-8") for t in inputs[INPUT].reshape(-1)]
        encodings = self.tokenizer.encode_batch(texts)
        ids = torch.tensor(np.array([e.ids for e in encodings], dtype=np.int64))
        mask = torch.tensor(np.array([e.attention_mask for e in encodings], dtype=np.int64))
        types = torch.tensor(np.array([e.type_ids for e in encodings], dtype=np.int64))
        dev = self.device
        return (ids.to(dev, non_blocking=True), mask.to(dev, non_blocking=True),
                types.to(dev, non_blocking=True))

    def forward(self, prepared: Any) -> torch.Tensor:
        with torch.inference_mode():
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

    def describe(self) -> dict[str, str]:
        facts = {"engine": self.engine.value, "precision": self.precision.value, "device": str(self.device)}
        if self.graphs is not None:
            facts["cuda_graphs"] = self.graphs.describe()
        return facts
