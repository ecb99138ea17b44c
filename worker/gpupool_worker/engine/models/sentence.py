"""Sentence embeddings as a served model: UTF-8 text (BYTES) in, one embedding per text out.

Tokenization (WordPiece, from the model's ``tokenizer.json``) happens before a request is queued,
off the compute thread (:meth:`SentenceEmbeddingModel.tokenize`, called by the batcher); each text
is first cut to the characters its first ``max_sequence_length`` tokens can come from (see
:func:`char_bound`), so a megabyte string costs what its usable prefix costs. Batches are padded
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
from tokenizers import Tokenizer

from gpupool_worker.engine.datatypes import DataType
from gpupool_worker.engine.errors import InferenceError
from gpupool_worker.engine.graphs import GraphBuckets, GraphedForward
from gpupool_worker.engine.model import Arrays, Model, TokenBatch
from gpupool_worker.engine.models.encoder import Encoder, build_ops, compiled
from gpupool_worker.engine.precision import EngineKind, Precision
from gpupool_worker.engine.selection import PathDispatch, pick_paths
from gpupool_worker.engine.types import ModelMetadata, TensorSpec

__all__ = ["SentenceEmbeddingModel", "char_bound"]

INPUT = "text"
OUTPUT = "embedding"
_TOKEN_ARRAYS = ("input_ids", "attention_mask", "token_type_ids")


def char_bound(max_tokens: int, max_chars_per_word: int) -> int:
    """How many characters of a text its first ``max_tokens`` WordPiece tokens can come from.

    BERT's pre-tokenizer splits on whitespace and punctuation; every word gives at least one
    token and WordPiece reads at most ``max_chars_per_word`` characters of a word (a longer word
    is one ``[UNK]``). So a prefix of ``max_tokens`` words of that length, each with a separator,
    holds every token the model will use: cutting there changes nothing, except for texts with
    words (or runs of whitespace) longer than ``max_chars_per_word``, where the cut may land
    earlier than the tokenizer's truncation would.
    """
    return max_tokens * (max_chars_per_word + 1)


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
        self.tokenizer = Tokenizer.from_file(str(weights / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_tokens)
        pad_id = self.tokenizer.token_to_id("[PAD]")
        self.tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
        word_limit = getattr(self.tokenizer.model, "max_input_chars_per_word", None)
        self.max_chars = char_bound(self.max_tokens, int(word_limit or 100))

    tokenizes = True

    def texts(self, inputs: Arrays) -> list[str]:
        """The request's texts, each decoded (strictly: bad UTF-8 is refused naming the element)
        and cut to :attr:`max_chars`. Only the bytes those characters can take (4 each) are read:
        a huge string's tail is neither decoded nor checked, since the model never sees it."""
        out = []
        limit = self.max_chars
        for i, element in enumerate(inputs[INPUT].reshape(-1)):
            raw = bytes(element)
            if len(raw) > 4 * limit:  # more than `limit` characters can take: read only those bytes
                cut = 4 * limit
                while cut > 0 and raw[cut] & 0xC0 == 0x80:  # not inside a character
                    cut -= 1
                raw = raw[:cut]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InferenceError.invalid(
                    f"tensor '{INPUT}': element {i} is not valid UTF-8 ({exc.reason} at byte "
                    f"{exc.start})") from None
            out.append(text[:limit] if len(text) > limit else text)
        return out

    def tokenize(self, inputs: Arrays) -> TokenBatch:
        encodings = self.tokenizer.encode_batch(self.texts(inputs))
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return TokenBatch(arrays, arrays["attention_mask"].sum(axis=1))

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
