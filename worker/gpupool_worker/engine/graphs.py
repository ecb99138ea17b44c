"""CUDA graphs for small batches: the encoder's forward captured once per (batch, sequence) bucket.

At small batches a GPU forward is launch-bound: Python plus ~50-150 kernel launches cost more than
the arithmetic. A CUDA graph replays all of them with one launch. A graph has fixed shapes and
fixed addresses, so each bucket owns static input buffers and a static output:

1. the batch (``rows`` x ``tokens``) is mapped to the smallest bucket that holds it
   (:meth:`GraphBuckets.bucket`); beyond the largest bucket the plain path runs;
2. the real inputs are copied into the bucket's static buffers, the rest filled with padding
   (token id 0, attention mask 0, type 0: padded tokens are masked out, padded rows are dropped);
3. the graph is replayed and the first ``rows`` rows of its output are copied out.

Capture happens at warm-up (:meth:`GraphedForward.capture`) or on a bucket's first use, after two
plain runs of that shape on a side stream (allocator warm-up, Triton autotuning, lazy init). If a
capture fails, graphs are switched off for the model, logged once, and every batch runs the plain
path. On a CPU nothing is captured.

All graphs of one model share one memory pool. That is safe because replays never overlap (a lock)
and a graph's output is copied out right after its replay, so a later replay of another graph may
reuse that memory freely. Static inputs live outside the pool.

The bucketing and padding functions are pure and run on any device; the tests check them on a CPU.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "DEFAULT_BATCH_BUCKETS",
    "DEFAULT_SEQ_BUCKETS",
    "GraphBuckets",
    "GraphedForward",
    "copy_padded",
    "smallest_fit",
    "take_rows",
]

log = logging.getLogger(__name__)

DEFAULT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
DEFAULT_SEQ_BUCKETS = (16, 32, 64, 128)
PAD = 0  # token id, attention mask and token type of padding

Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def smallest_fit(n: int, buckets: Sequence[int]) -> int | None:
    """The smallest bucket >= ``n`` (``buckets`` ascending), or None when ``n`` exceeds them all."""
    if n < 1:
        return None
    i = bisect.bisect_left(buckets, n)
    return buckets[i] if i < len(buckets) else None


def _buckets_upto(buckets: Sequence[int], limit: int | None) -> tuple[int, ...]:
    """The buckets a size up to ``limit`` can land in (all when ``limit`` is None)."""
    if limit is None:
        return tuple(buckets)
    top = smallest_fit(limit, buckets)
    return tuple(b for b in buckets if top is None or b <= top)


@dataclass(frozen=True, slots=True)
class GraphBuckets:
    """Batch-size and sequence-length buckets, one graph per pair (at most len(batch) x len(seq))."""

    batch: tuple[int, ...] = DEFAULT_BATCH_BUCKETS
    seq: tuple[int, ...] = DEFAULT_SEQ_BUCKETS

    def __post_init__(self) -> None:
        for name, values in (("batch", self.batch), ("seq", self.seq)):
            if not values:
                raise ValueError(f"CUDA graph {name} buckets must not be empty")
            if any(v < 1 for v in values) or list(values) != sorted(set(values)):
                raise ValueError(f"CUDA graph {name} buckets must be distinct, positive and ascending, "
                                 f"got {list(values)}")

    def bucket(self, rows: int, tokens: int) -> tuple[int, int] | None:
        """The (batch, seq) bucket a ``rows`` x ``tokens`` batch pads into, or None: plain path."""
        b = smallest_fit(rows, self.batch)
        s = smallest_fit(tokens, self.seq)
        return None if b is None or s is None else (b, s)

    def reachable(self, max_rows: int | None, max_tokens: int | None) -> list[tuple[int, int]]:
        """The buckets batches of at most ``max_rows`` x ``max_tokens`` can use, largest first
        (the order to capture in, so smaller graphs reuse the pool's memory)."""
        pairs = [(b, s) for b in _buckets_upto(self.batch, max_rows) for s in _buckets_upto(self.seq, max_tokens)]
        return sorted(pairs, key=lambda p: (p[0] * p[1], p), reverse=True)


def copy_padded(dst: torch.Tensor, src: torch.Tensor, fill: int | float = PAD) -> None:
    """Copy 2-D ``src`` into the top-left corner of ``dst`` and set the rest of ``dst`` to ``fill``."""
    rows, cols = src.shape
    if rows > dst.shape[0] or cols > dst.shape[1]:
        raise ValueError(f"a {rows}x{cols} batch does not fit a {dst.shape[0]}x{dst.shape[1]} buffer")
    dst[:rows, :cols].copy_(src)
    if cols < dst.shape[1]:
        dst[:rows, cols:].fill_(fill)
    if rows < dst.shape[0]:
        dst[rows:].fill_(fill)


def take_rows(out: torch.Tensor, rows: int) -> torch.Tensor:
    """The first ``rows`` rows of a static output, copied (the next replay overwrites the buffer)."""
    return out[:rows].clone()


@dataclass(slots=True)
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    output: torch.Tensor

    def run(self, args: Iterable[torch.Tensor], rows: int) -> torch.Tensor:
        for dst, src in zip(self.inputs, args, strict=True):
            copy_padded(dst, src)
        self.graph.replay()
        return take_rows(self.output, rows)


class GraphedForward:
    """A forward ``(input_ids, attention_mask, token_type_ids) -> [batch, ...]`` that replays a
    CUDA graph for batches within the buckets and calls the plain forward otherwise.

    ``forward`` must be capturable: no host synchronization, no data-dependent shapes.
    """

    def __init__(self, forward: Forward, device: torch.device, *, buckets: GraphBuckets | None = None,
                 enabled: bool = True, name: str = "model") -> None:
        self.forward = forward
        self.device = device
        self.buckets = buckets or GraphBuckets()
        self.name = name
        self._graphs: dict[tuple[int, int], _Graph] = {}
        self._pool: Any = None
        self._lock = threading.Lock()
        self.off_reason = ""
        if not enabled:
            self.off_reason = "disabled by configuration"
        elif device.type != "cuda":
            self.off_reason = f"device {device} is not a CUDA device"

    @property
    def enabled(self) -> bool:
        return not self.off_reason

    @property
    def captured(self) -> list[tuple[int, int]]:
        return sorted(self._graphs)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor) -> torch.Tensor:
        key = self.buckets.bucket(*input_ids.shape) if self.enabled else None
        if key is None:
            return self.forward(input_ids, attention_mask, token_type_ids)
        with self._lock, torch.inference_mode():
            graph = self._graphs.get(key) or self._capture(key)
            if graph is not None:
                return graph.run((input_ids, attention_mask, token_type_ids), input_ids.shape[0])
        return self.forward(input_ids, attention_mask, token_type_ids)

    def capture(self, max_rows: int | None = None, max_tokens: int | None = None) -> int:
        """Capture every bucket batches up to ``max_rows`` x ``max_tokens`` can use (warm-up);
        returns how many graphs exist afterwards (0 when graphs are off)."""
        if not self.enabled:
            return 0
        with self._lock:
            for key in self.buckets.reachable(max_rows, max_tokens):
                if key not in self._graphs and self._capture(key) is None:
                    break
        return len(self._graphs)

    def describe(self) -> str:
        if not self.enabled:
            return f"off ({self.off_reason})"
        return f"on ({len(self._graphs)} captured; batch {list(self.buckets.batch)} x seq {list(self.buckets.seq)})"

    def _capture(self, key: tuple[int, int]) -> _Graph | None:
        """Capture one bucket's graph (lock held); on failure switch graphs off and log it once."""
        if not self.enabled:
            return None
        rows, tokens = key
        dev = self.device
        try:
            with torch.inference_mode():
                ids = torch.full((rows, tokens), 101, dtype=torch.int64, device=dev)
                mask = torch.ones((rows, tokens), dtype=torch.int64, device=dev)
                types = torch.zeros((rows, tokens), dtype=torch.int64, device=dev)
                side = torch.cuda.Stream(dev)  # type: ignore[no-untyped-call]
                side.wait_stream(torch.cuda.current_stream(dev))
                with torch.cuda.stream(side):
                    for _ in range(2):  # allocator, cuBLAS handles, Triton autotuning: not in the graph
                        self.forward(ids, mask, types)
                torch.cuda.current_stream(dev).wait_stream(side)
                if self._pool is None:
                    self._pool = torch.cuda.graph_pool_handle()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=self._pool):
                    output = self.forward(ids, mask, types)
            torch.cuda.synchronize(dev)
        except Exception as exc:  # any failure: fall back to the plain path, once
            self.off_reason = f"capture of batch {rows} x seq {tokens} failed: {' '.join(str(exc).split())[:300]}"
            log.warning("%s: CUDA graphs switched off, running the plain path: %s", self.name, self.off_reason)
            self._graphs.clear()
            return None
        captured = _Graph(graph, (ids, mask, types), output)
        self._graphs[key] = captured
        return captured
