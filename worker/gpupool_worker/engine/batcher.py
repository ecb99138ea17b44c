"""Dynamic batching: gather concurrent requests for one model into batches, Triton-style.

A batch closes when it holds ``max_batch_size`` rows or when its oldest request has waited
``max_queue_delay``; whichever first. Requests whose non-batch shapes differ cannot share a batch
and wait for the next one (first in, first out among compatible requests). One batch executes at a
time per model on a dedicated thread, so while the device works the next batch fills up: under load
batches grow by themselves.

The queue delay is only worth paying when more requests are about to arrive. So a batch also closes
as soon as it holds as many rows as the previous batch did, and a request that finds the model idle
with no batch finished within the last ``max_queue_delay`` (nobody about to come back) runs at once.
Callers of a batch that just finished usually send their next request within the delay (closed-loop
clients do), so the next batch waits for them, up to ``max_queue_delay`` after that batch finished:
a lone request at low load pays no delay, and a group of clients that fell out of step (one batch of
1, one of 7) merges again instead of alternating.

A request that was cancelled (client gone, deadline passed) is dropped before execution and costs
nothing. An exception in a model fails only the requests of that batch.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gpupool_worker.engine.errors import ErrorKind, InferenceError
from gpupool_worker.engine.metrics import WorkerMetrics
from gpupool_worker.engine.model import Arrays, Execution, Model
from gpupool_worker.engine.statistics import ModelStatistics

__all__ = ["BatchPolicy", "BatchResult", "DynamicBatcher"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch_size: int = 32
    max_queue_delay_us: int = 2_000
    max_queue_size: int = 1_024
    # Batches whose typical execution is shorter than this run on the event loop itself: a hop to
    # the model thread and back costs ~100-300 us of wake-ups, more than a tiny model's compute.
    # 0 disables (every batch on the model thread).
    inline_below_us: int = 200

    def __post_init__(self) -> None:
        if self.max_batch_size < 0:
            raise ValueError("max_batch_size must be >= 0 (0: the model does not batch)")
        if self.max_queue_delay_us < 0:
            raise ValueError("max_queue_delay_us must be >= 0")
        if self.max_queue_size < 1:
            raise ValueError("max_queue_size must be >= 1")
        if self.inline_below_us < 0:
            raise ValueError("inline_below_us must be >= 0")


@dataclass(frozen=True, slots=True)
class BatchResult:
    outputs: dict[str, npt.NDArray[Any]]
    batch_rows: int
    queue_ns: int
    busy_ns: int
    cost_usd: float


@dataclass(slots=True)
class _Pending:
    inputs: Arrays
    rows: int
    signature: tuple[tuple[str, np.dtype[Any], tuple[int, ...]], ...]
    future: asyncio.Future[BatchResult]
    enqueued_ns: int
    deadline_ns: int | None


def _signature(inputs: Arrays, batched: bool) -> tuple[tuple[str, np.dtype[Any], tuple[int, ...]], ...]:
    skip = 1 if batched else 0
    return tuple(sorted((k, v.dtype, v.shape[skip:]) for k, v in inputs.items()))


class DynamicBatcher:
    """The queue and the execution loop of one model."""

    def __init__(
        self,
        model: Model,
        policy: BatchPolicy,
        statistics: ModelStatistics,
        metrics: WorkerMetrics,
        *,
        clock: Callable[[], int] = time.perf_counter_ns,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self._model = model
        self._policy = policy
        self._stats = statistics
        self._metrics = metrics
        self._clock = clock
        self._batched = model.max_batch_size > 0
        self._limit = max(model.max_batch_size, 1) if self._batched else 1
        if self._batched:
            self._limit = min(self._limit, policy.max_batch_size or self._limit)
        self._queue: collections.deque[_Pending] = collections.deque()
        self._arrived = asyncio.Event()
        # the worker passes its one compute thread (see engine.compute); alone, a batcher has its own
        self._owns_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"model-{model.name}")
        self._task: asyncio.Task[None] | None = None
        self._accepting = True
        self._executing = 0
        self._label = model.name
        # moving averages of batch execution time on the event loop and on the model thread: the
        # thread's includes the hand-offs and waits for the GIL, so it says little about how long
        # a batch would hold the loop (a tiny model measures 3-5x slower there than inline)
        self._inline_ns: float | None = None
        self._thread_ns: float | None = None
        self._since_probe = 0  # batches on the model thread since the last one on the loop
        self._on_loop = False  # batches run on the event loop (see _run_inline)
        self._holding = False  # the batcher task holds a batch (collecting or executing)
        self._last_rows = 0  # rows of the last executed batch ...
        self._last_finished_ns = 0  # ... and when it finished (self._clock())
        self.inline_executions = 0
        self._meters = metrics.model(model.name)
        self._meters.queue_depth = lambda: float(len(self._queue))
        self._meters.cost_per_inference = lambda: statistics.cost_per_inference_usd

    # -- observability -------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (not yet executing)."""
        return len(self._queue)

    @property
    def executing(self) -> int:
        """Requests in the batch now on the device."""
        return self._executing

    @property
    def max_batch_rows(self) -> int:
        return self._limit

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"batcher-{self._label}")

    async def stop(self, *, drain: bool = True) -> None:
        """Stop accepting; with ``drain``, finish what is queued, then stop the loop."""
        self._accepting = False
        if drain:
            while self._queue or self._executing:
                await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(InferenceError.unavailable("worker is shutting down"))
        self._queue.clear()
        if self._owns_executor:
            self._executor.shutdown(wait=True)

    # -- submission ----------------------------------------------------------------------------
    async def infer(self, inputs: Arrays, *, deadline_ns: int | None = None) -> BatchResult:
        if not self._accepting:
            raise InferenceError.unavailable(f"model '{self._label}' is shutting down")
        if self._task is None:
            raise InferenceError.unavailable(f"model '{self._label}' is not started")
        if len(self._queue) >= self._policy.max_queue_size:
            raise InferenceError(
                ErrorKind.UNAVAILABLE,
                f"model '{self._label}' queue is full ({self._policy.max_queue_size} requests waiting)",
            )
        rows = int(next(iter(inputs.values())).shape[0]) if self._batched else 1
        now = self._clock()
        if (not self._queue and not self._holding and self._run_inline()
                and rows >= self._target(now)):
            # Idle model, fast batches, nobody worth waiting for: run it here and now. The batch
            # would close at once anyway; this saves the hops to the batcher task and back.
            return self._run_now(inputs, rows, now, deadline_ns)
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        pending = _Pending(inputs, rows, _signature(inputs, self._batched), future, now, deadline_ns)
        self._queue.append(pending)
        self._arrived.set()
        return await future

    def _run_now(self, inputs: Arrays, rows: int, now: int, deadline_ns: int | None) -> BatchResult:
        """One request, alone, on the event loop (no queue entry, no future: nothing waits)."""
        if deadline_ns is not None and now >= deadline_ns:
            raise self._expired(now, now)
        self._holding = True
        self._executing = 1
        try:
            execution = self._model.execute(inputs)
            self.inline_executions += 1
        except Exception as exc:
            raise self._failure(rows, exc) from None
        finally:
            self._holding = False
            self._finished(rows)
        self._ran_on_loop(execution.busy_ns)
        batch_usd = self._account(execution, rows, 1)
        return BatchResult(outputs=execution.outputs, batch_rows=rows, queue_ns=0,
                           busy_ns=execution.busy_ns, cost_usd=batch_usd)

    # -- the loop ------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                batch = await self._collect()
                if batch:
                    await self._execute(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive any one batch
                log.exception("batcher of model %s: unexpected error", self._label)
            finally:
                self._holding = False

    async def _next_arrival(self, timeout_s: float | None) -> None:
        self._arrived.clear()
        if timeout_s is None:
            await self._arrived.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout_s)

    def _take_compatible(self, batch: list[_Pending], rows: int) -> int:
        """Move queued requests that fit the batch into it, oldest first."""
        signature = batch[0].signature
        kept: collections.deque[_Pending] = collections.deque()
        while self._queue:
            item = self._queue.popleft()
            if item.future.done():
                continue
            if self._batched and item.signature == signature and rows + item.rows <= self._limit:
                batch.append(item)
                rows += item.rows
            else:
                kept.append(item)
                if not self._batched or rows >= self._limit:
                    break
        kept.extend(self._queue)
        self._queue = kept
        return rows

    async def _collect(self) -> list[_Pending]:
        while not self._queue:
            await self._next_arrival(None)
        first = self._queue.popleft()
        if first.future.done():
            return []
        self._holding = True
        batch = [first]
        if self._batched:
            rows = self._take_compatible(batch, first.rows)
            target = self._target(self._clock())
            close_at = max(first.enqueued_ns, self._last_finished_ns) + self._policy.max_queue_delay_us * 1_000
            while rows < target:
                remaining = close_at - self._clock()
                if remaining <= 0:
                    break
                await self._next_arrival(remaining / 1e9)
                rows = self._take_compatible(batch, rows)
        return batch

    def _target(self, now: int) -> int:
        """Rows worth waiting for: those of the previous batch if it finished within the queue
        delay (its callers are likely to send again), else none (the batch closes at once)."""
        if now - self._last_finished_ns < self._policy.max_queue_delay_us * 1_000:
            return min(self._limit, self._last_rows)
        return 0

    def _admit(self, batch: list[_Pending], now: int) -> list[_Pending]:
        """The requests of ``batch`` still worth executing (not cancelled, deadline not passed)."""
        live: list[_Pending] = []
        for item in batch:
            if item.future.done():
                continue
            if item.deadline_ns is not None and now >= item.deadline_ns:
                item.future.set_exception(self._expired(now, item.enqueued_ns))
                continue
            live.append(item)
        return live

    def _execute_inline(self, batch: list[_Pending]) -> None:
        """Execute on the event loop: only for batches known to take under ``inline_below_us``."""
        now = self._clock()
        started = self._start(batch, now)
        if started is None:
            return
        live, inputs, rows = started
        try:
            execution = self._model.execute(inputs)
            self.inline_executions += 1
        except Exception as exc:
            self._fail(live, rows, exc)
            return
        finally:
            self._finished(rows)
        self._ran_on_loop(execution.busy_ns)
        self._complete(live, execution, rows, now)

    async def _execute(self, batch: list[_Pending]) -> None:
        if self._run_inline():
            self._execute_inline(batch)
            return
        now = self._clock()
        started = self._start(batch, now)
        if started is None:
            return
        live, inputs, rows = started
        try:
            execution = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._model.execute, inputs)
        except Exception as exc:
            self._fail(live, rows, exc)
            return
        finally:
            self._finished(rows)
        self._since_probe += 1
        self._thread_ns = _average(self._thread_ns, execution.busy_ns)
        self._complete(live, execution, rows, now)

    def _start(
        self, batch: list[_Pending], now: int
    ) -> tuple[list[_Pending], Arrays, int] | None:
        """Admit ``batch`` (dropping expired and cancelled requests) and mark it executing: the
        live requests, their model inputs (concatenated when the model batches) and row count."""
        live = self._admit(batch, now)
        if not live:
            return None
        inputs = _concatenate(live) if self._batched else live[0].inputs
        self._executing = len(live)
        return live, inputs, sum(item.rows for item in live)

    def _finished(self, rows: int) -> None:
        self._executing = 0
        self._last_rows = rows
        self._last_finished_ns = self._clock()

    def _expired(self, now: int, enqueued_ns: int) -> InferenceError:
        return InferenceError(
            ErrorKind.DEADLINE_EXCEEDED,
            f"deadline passed after {(now - enqueued_ns) / 1e6:.1f} ms in the queue "
            f"of model '{self._label}'")

    def _failure(self, rows: int, exc: Exception) -> InferenceError:
        log.exception("model %s failed on a batch of %d rows", self._label, rows, exc_info=exc)
        return InferenceError(ErrorKind.INTERNAL, f"model '{self._label}' failed: {exc}")

    def _fail(self, live: list[_Pending], rows: int, exc: Exception) -> None:
        error = self._failure(rows, exc)
        for item in live:
            if not item.future.done():
                item.future.set_exception(error)

    def _account(self, execution: Execution, rows: int, requests: int) -> float:
        """Record an executed batch in the statistics and metrics; returns its cost (USD)."""
        batch_usd = self._stats.record_execution(
            batch_rows=rows, requests=requests, input_ns=execution.input_ns,
            infer_ns=execution.infer_ns, output_ns=execution.output_ns,
            finished_ms=time.time_ns() // 1_000_000)
        self._record_metrics(execution, rows, batch_usd)
        return batch_usd

    def _complete(self, live: list[_Pending], execution: Execution, rows: int, now: int) -> None:
        batch_usd = self._account(execution, rows, len(live))
        offset = 0
        for item in live:
            outputs = (
                {k: v[offset : offset + item.rows] for k, v in execution.outputs.items()}
                if self._batched else execution.outputs
            )
            offset += item.rows
            if not item.future.done():
                item.future.set_result(BatchResult(
                    outputs=outputs, batch_rows=rows, queue_ns=now - item.enqueued_ns,
                    busy_ns=execution.busy_ns * item.rows // rows,
                    cost_usd=batch_usd * item.rows / rows))

    def _run_inline(self) -> bool:
        """Whether the next batch runs on the event loop: yes while batches measured there stay
        fast (under ``inline_below_us`` to start, under twice that to stay: a preempted batch or
        two must not send a fast model back to the thread). A model not (or no longer) known to
        be that fast runs on the model thread, and is tried on the loop again now and then when
        its thread measure is within a few times the limit (that measure, inflated by the
        hand-offs, would otherwise keep a fast model off the loop for ever)."""
        if self._on_loop:
            return True
        limit = self._policy.inline_below_us * 1_000
        if limit <= 0 or self._thread_ns is None or self._thread_ns >= _PROBE_WITHIN * limit:
            return False
        return self._inline_ns is None or self._since_probe >= _PROBE_EVERY

    def _ran_on_loop(self, busy_ns: int) -> None:
        limit = self._policy.inline_below_us * 1_000
        # a trial starts afresh; a model already on the loop averages
        self._inline_ns = _average(self._inline_ns if self._on_loop else None, busy_ns)
        self._on_loop = self._inline_ns < (2 * limit if self._on_loop else limit)
        self._since_probe = 0

    def _record_metrics(self, execution: Execution, rows: int, batch_usd: float) -> None:
        m = self._meters
        m.executions += 1
        m.inferences += rows
        m.batch_size.observe(rows)
        busy_s = execution.busy_ns / 1e9
        m.compute_latency.observe(busy_s)
        m.busy_seconds += busy_s
        m.cost_usd += batch_usd


_PROBE_WITHIN = 4  # try the loop when the thread measure is under this many times the limit ...
_PROBE_EVERY = 64  # ... at most once per this many batches on the model thread


def _average(mean: float | None, sample: int) -> float:
    return float(sample) if mean is None else 0.8 * mean + 0.2 * sample


def _concatenate(batch: list[_Pending]) -> dict[str, npt.NDArray[Any]]:
    if len(batch) == 1:
        return dict(batch[0].inputs)
    names = batch[0].inputs.keys()
    return {name: np.concatenate([item.inputs[name] for item in batch], axis=0) for name in names}
