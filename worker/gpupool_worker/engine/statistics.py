"""Cumulative per-model statistics in the shape of Triton's ModelStatistics (plus cost).

Counters only ever grow; the servicer converts a :class:`StatisticsSnapshot` into the protocol's
message. Durations are nanoseconds, as in Triton.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gpupool_worker.engine.costing import CostFigures, CostLedger, CostModel

__all__ = ["BatchStat", "Duration", "ModelStatistics", "StatisticsSnapshot"]


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass(slots=True)
class BatchStat:
    batch_size: int
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(frozen=True, slots=True)
class StatisticsSnapshot:
    name: str
    version: str
    last_inference_ms: int
    inference_count: int
    execution_count: int
    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration
    batch_stats: tuple[BatchStat, ...]
    busy_ns: int
    cost_total_usd: float
    cost: CostModel
    figures: CostFigures

    @property
    def cost_per_inference_usd(self) -> float:
        return self.cost_total_usd / self.inference_count if self.inference_count else 0.0


class ModelStatistics:
    """Thread-safe accumulator; the batcher records executions, the data plane records requests."""

    def __init__(self, name: str, version: str, cost: CostModel, *, ledger: CostLedger | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``ledger``: the replica's (shared by its models, see :class:`CostLedger`); alone, a
        model gets its own, started now."""
        self._clock = clock
        self.ledger = ledger or CostLedger(cost, started_s=clock())
        self._lock = threading.Lock()
        self._name = name
        self._version = version
        self._cost = cost
        self._last_inference_ms = 0
        self._inference_count = 0
        self._execution_count = 0
        self._success = Duration()
        self._fail = Duration()
        self._queue = Duration()
        self._input = Duration()
        self._infer = Duration()
        self._output = Duration()
        self._batches: dict[int, BatchStat] = {}
        self._busy_ns = 0
        self._cost_usd = 0.0

    def record_execution(
        self, *, batch_rows: int, requests: int, input_ns: int, infer_ns: int, output_ns: int,
        finished_ms: int,
    ) -> float:
        """Record one executed batch; returns its cost in USD."""
        busy = input_ns + infer_ns + output_ns
        usd = self._cost.cost_of(busy)
        with self._lock:
            self._execution_count += 1
            self._inference_count += batch_rows
            self._last_inference_ms = finished_ms
            self._input.add(input_ns, requests)
            self._infer.add(infer_ns, requests)
            self._output.add(output_ns, requests)
            stat = self._batches.setdefault(batch_rows, BatchStat(batch_rows))
            stat.compute_input.add(input_ns)
            stat.compute_infer.add(infer_ns)
            stat.compute_output.add(output_ns)
            self._busy_ns += busy
            self._cost_usd += usd
        self.ledger.record(self._name, rows=batch_rows, busy_ns=busy, at_s=self._clock())
        return usd

    def figures(self) -> CostFigures:
        """Cost per inference now: busy and idle-charged, window and lifetime."""
        return self.ledger.figures(self._name, self._clock())

    @property
    def cost_per_inference_usd(self) -> float:
        with self._lock:
            return self._cost_usd / self._inference_count if self._inference_count else 0.0

    def record_request(self, *, ok: bool, total_ns: int, queue_ns: int) -> None:
        with self._lock:
            (self._success if ok else self._fail).add(total_ns)
            if ok:
                self._queue.add(queue_ns)

    def snapshot(self) -> StatisticsSnapshot:
        with self._lock:
            def copy(d: Duration) -> Duration:
                return Duration(d.count, d.ns)

            return StatisticsSnapshot(
                name=self._name,
                version=self._version,
                last_inference_ms=self._last_inference_ms,
                inference_count=self._inference_count,
                execution_count=self._execution_count,
                success=copy(self._success),
                fail=copy(self._fail),
                queue=copy(self._queue),
                compute_input=copy(self._input),
                compute_infer=copy(self._infer),
                compute_output=copy(self._output),
                batch_stats=tuple(
                    BatchStat(b.batch_size, copy(b.compute_input), copy(b.compute_infer),
                              copy(b.compute_output))
                    for _, b in sorted(self._batches.items())
                ),
                busy_ns=self._busy_ns,
                cost_total_usd=self._cost_usd,
                cost=self._cost,
                figures=self.figures(),
            )
