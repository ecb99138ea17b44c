"""Dynamic batching: gather concurrent requests for one model into batches, closed when the
engine frees rather than on a timer.

One batch executes at a time per engine (the worker's one compute thread, shared by its models
through an :class:`asyncio.Lock`, the *engine gate*). A batch forms the moment the engine is free:
it takes every compatible request queued at that moment (oldest first) up to ``max_batch_size``
rows and, for text models, ``batch_token_budget`` padded tokens. While the engine works, the next
batch fills by itself; with the engine idle, a request runs at once (no delay: nobody waits on a
timer for company that may not come). ``max_queue_delay_us`` is accepted for Triton-style
configurations and the pool's ``maxQueueDelay`` but holds nothing back.

Text models (:attr:`Model.tokenizes`) are tokenized before queueing, off the compute thread: on
the event loop when the request is small, on a tokenizer thread otherwise. Their rows carry
lengths, so a batch takes requests of one *length bucket* (longest row rounded up to a power of
two, at least 16 tokens): short sentences are not padded to the length of long ones. A request of
more than ``request_token_budget`` padded tokens is split into chunks that queue one after the
other: each chunk goes to the back of the queue, so small requests that arrived meanwhile run
between a huge request's chunks, and nobody waits for all of it. While other requests compete (one
arrived since the previous chunk was queued or within the last second, or one is waiting or
executing), the next chunk is cut finer, to ``preempt_token_budget`` padded
tokens (default: one row as long as the model takes), so a small request waits for about one row's
work, not for a whole chunk; alone, a huge request runs in full-size chunks.

Requests whose non-batch shapes differ cannot share a batch and wait for the next one. A request
that was cancelled (client gone, deadline passed) is dropped before execution and costs nothing.
An exception in a model fails only the requests of that batch.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gpupool_worker.engine.errors import ErrorKind, InferenceError
from gpupool_worker.engine.logs import RateLimitedLog
from gpupool_worker.engine.metrics import WorkerMetrics
from gpupool_worker.engine.model import Arrays, Execution, Model, TokenBatch
from gpupool_worker.engine.statistics import ModelStatistics

__all__ = ["BatchPolicy", "BatchResult", "DynamicBatcher", "length_bucket"]

log = logging.getLogger(__name__)
_errors = RateLimitedLog(log)


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch_size: int = 32
    max_queue_delay_us: int = 2_000  # accepted, holds nothing back (see the module's docstring)
    max_queue_size: int = 1_024
    # Batches whose typical execution is shorter than this run on the event loop itself: a hop to
    # the model thread and back costs ~100-300 us of wake-ups, more than a tiny model's compute.
    # 0 disables (every batch on the model thread).
    inline_below_us: int = 200
    # Text models: padded tokens (rows x longest row) in one batch, and in one request before
    # it is split into chunks that interleave with other requests.
    batch_token_budget: int = 8_192
    request_token_budget: int = 1_024
    # the chunk size while other requests compete with a chunked one (0: the model's longest row,
    # ``Model.max_tokens``); never more than ``request_token_budget``
    preempt_token_budget: int = 0

    def __post_init__(self) -> None:
        if self.max_batch_size < 0:
            raise ValueError("max_batch_size must be >= 0 (0: the model does not batch)")
        if self.max_queue_delay_us < 0:
            raise ValueError("max_queue_delay_us must be >= 0")
        if self.max_queue_size < 1:
            raise ValueError("max_queue_size must be >= 1")
        if self.inline_below_us < 0:
            raise ValueError("inline_below_us must be >= 0")
        if self.batch_token_budget < 1 or self.request_token_budget < 1:
            raise ValueError("batch_token_budget and request_token_budget must be >= 1")
        if self.preempt_token_budget < 0:
            raise ValueError("preempt_token_budget must be >= 0 (0: the model's longest row)")


@dataclass(frozen=True, slots=True)
class BatchResult:
    outputs: dict[str, npt.NDArray[Any]]
    batch_rows: int
    queue_ns: int
    busy_ns: int
    cost_usd: float
    chunks: int = 1
    # the model's cost per inference with idle time charged (last 60 s) when the batch finished:
    # one figure per batch, not one per request
    idle_charged_usd: float = 0.0


@dataclass(slots=True)
class _Pending:
    inputs: Arrays | TokenBatch
    rows: int
    signature: tuple[Any, ...]
    future: asyncio.Future[BatchResult]
    enqueued_ns: int
    deadline_ns: int | None
    width: int = 0  # longest row in tokens (text models), else 0
    bucket: int = 0


def _signature(inputs: Arrays, batched: bool) -> tuple[tuple[str, np.dtype[Any], tuple[int, ...]], ...]:
    skip = 1 if batched else 0
    return tuple(sorted((k, v.dtype, v.shape[skip:]) for k, v in inputs.items()))


def length_bucket(width: int) -> int:
    """The bucket of a row ``width`` tokens long: the next power of two, at least 16."""
    bucket = 16
    while bucket < width:
        bucket *= 2
    return bucket


# requests with at most this many bytes of input are tokenized on the event loop (a hop to the
# tokenizer thread and back costs more than tokenizing a sentence or two)
_INLINE_TOKENIZE_BYTES = 4_096


@functools.cache
def _tokenizer_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The worker's tokenizer thread (one: the tokenizers library parallelises a batch itself)."""
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gpupool-tokenize")


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
        engine_gate: asyncio.Lock | None = None,
        tokenizer: concurrent.futures.Executor | None = None,
    ) -> None:
        self._model = model
        self._policy = policy
        self._stats = statistics
        self._metrics = metrics
        self._clock = clock
        self._batched = model.max_batch_size > 0
        self._tokens = model.tokenizes and self._batched
        self._limit = max(model.max_batch_size, 1) if self._batched else 1
        if self._batched:
            self._limit = min(self._limit, policy.max_batch_size or self._limit)
        self._queue: collections.deque[_Pending] = collections.deque()
        self._arrived = asyncio.Event()
        # the worker passes its one compute thread (see engine.compute); alone, a batcher has its own
        self._owns_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"model-{model.name}")
        self._gate = engine_gate or asyncio.Lock()
        self._tokenizer = tokenizer
        self._task: asyncio.Task[None] | None = None
        self._accepting = True
        self._executing = 0
        self._active = 0  # accepted infer() calls not yet answered (a chunked one between chunks too)
        self._submitted = 0  # entries ever queued: a chunked request sees whether others came meanwhile
        self._last_submit_ns: int | None = None  # when the latest whole (unchunked) request was queued
        fine = policy.preempt_token_budget or model.max_tokens or policy.request_token_budget
        self._preempt_tokens = min(fine, policy.request_token_budget)
        self.chunk_budgets: collections.deque[int] = collections.deque(maxlen=64)  # the latest chunks' budgets
        self._label = model.name
        # moving averages of batch execution time on the event loop and on the model thread: the
        # thread's includes the hand-offs and waits for the GIL, so it says little about how long
        # a batch would hold the loop (a tiny model measures 3-5x slower there than inline)
        self._inline_ns: float | None = None
        self._thread_ns: float | None = None
        self._since_probe = 0  # batches on the model thread since the last one on the loop
        self._on_loop = False  # batches run on the event loop (see _run_inline)
        self._holding = False  # the batcher task holds a batch (forming or executing)
        self.inline_executions = 0
        # what each batch carried of what was waiting when it formed (the batching goal's measure)
        self.batches_formed = 0
        self.requests_batched = 0
        self.requests_waiting = 0
        self._meters = metrics.model(model.name)
        self._meters.queue_depth = lambda: float(len(self._queue))
        self._meters.executing = lambda: float(self._executing)
        self._meters.cost_per_inference = statistics.figures

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
            while self._queue or self._executing or self._active:
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
    def _check_open(self) -> None:
        if not self._accepting:
            raise InferenceError.unavailable(f"model '{self._label}' is shutting down")
        if self._task is None:
            raise InferenceError.unavailable(f"model '{self._label}' is not started")

    async def infer(self, inputs: Arrays, *, deadline_ns: int | None = None) -> BatchResult:
        self._check_open()
        if len(self._queue) >= self._policy.max_queue_size:
            raise InferenceError(
                ErrorKind.UNAVAILABLE,
                f"model '{self._label}' queue is full ({self._policy.max_queue_size} requests waiting)",
            )
        if self._tokens:
            self._active += 1
            try:
                return await self._infer_tokens(await self._tokenize(inputs), deadline_ns)
            finally:
                self._active -= 1
        rows = int(next(iter(inputs.values())).shape[0]) if self._batched else 1
        now = self._clock()
        if not self._queue and not self._holding and not self._gate.locked() and self._run_inline():
            # Idle model, fast batches: run it here and now. The batch would form at once anyway;
            # this saves the hops to the batcher task and back.
            return self._run_now(inputs, rows, now, deadline_ns)
        return await self._submit(inputs, rows, _signature(inputs, self._batched), now, deadline_ns)

    async def _submit(self, inputs: Arrays | TokenBatch, rows: int, signature: tuple[Any, ...], now: int,
                      deadline_ns: int | None, width: int = 0) -> BatchResult:
        return await self._enqueue(inputs, rows, signature, now, deadline_ns, width)

    def _enqueue(self, inputs: Arrays | TokenBatch, rows: int, signature: tuple[Any, ...], now: int,
                 deadline_ns: int | None, width: int = 0, *, chunk: bool = False) -> asyncio.Future[BatchResult]:
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        self._submitted += 1
        if not chunk:
            self._last_submit_ns = now
        self._queue.append(_Pending(inputs, rows, signature, future, now, deadline_ns, width,
                                    length_bucket(width) if width else 0))
        self._arrived.set()
        return future

    async def _tokenize(self, inputs: Arrays) -> TokenBatch:
        if _payload_bytes(inputs) <= _INLINE_TOKENIZE_BYTES:
            return self._model.tokenize(inputs)
        return await asyncio.get_running_loop().run_in_executor(
            self._tokenizer or _tokenizer_executor(), self._model.tokenize, inputs)

    async def _infer_tokens(self, tokens: TokenBatch, deadline_ns: int | None) -> BatchResult:
        """Queue a tokenized request, split into chunks of at most ``request_token_budget``
        padded tokens when it is larger; each chunk queues once the one before it is done, and is
        cut to ``preempt_token_budget`` while other requests compete (see the module docstring).
        Not refused once accepted, even when the batcher begins to stop meanwhile (:meth:`stop`
        waits for it)."""
        signature = ("tokens", *sorted(tokens.arrays))
        if tokens.rows <= 1 or tokens.rows * tokens.width <= self._policy.request_token_budget:
            return await self._submit(tokens, tokens.rows, signature, self._clock(), deadline_ns,
                                      max(tokens.width, 1))
        # longest rows first would group widths, but answers must keep the request's row order:
        # chunks are consecutive rows, each trimmed to its own longest row
        parts: list[BatchResult] = []
        start = 0
        # a whole request came just before it: its first chunk is cut fine too (the chunks of an
        # earlier huge request do not count, so huge requests back to back keep full chunks)
        recent = self._last_submit_ns is not None and self._clock() - self._last_submit_ns < _RECENT_NS
        seen = self._submitted - 1 if recent else self._submitted
        while start < tokens.rows:
            budget = (self._preempt_tokens if self._submitted != seen or self._queue or self._executing
                      or self._others_recently() else self._policy.request_token_budget)
            self.chunk_budgets.append(budget)
            stop = start + 1
            width = int(tokens.lengths[start])
            while stop < tokens.rows and stop - start < self._limit:
                wider = max(width, int(tokens.lengths[stop]))
                if (stop + 1 - start) * wider > budget:
                    break
                width, stop = wider, stop + 1
            chunk = tokens.take(start, stop)
            result = self._enqueue(chunk, chunk.rows, signature, self._clock(), deadline_ns, max(chunk.width, 1),
                                   chunk=True)
            seen = self._submitted  # this chunk's own entry is not competition
            parts.append(await result)
            start = stop
        names = parts[0].outputs.keys()
        return BatchResult(
            outputs={k: np.concatenate([p.outputs[k] for p in parts], axis=0) for k in names},
            batch_rows=max(p.batch_rows for p in parts), queue_ns=sum(p.queue_ns for p in parts),
            busy_ns=sum(p.busy_ns for p in parts), cost_usd=sum(p.cost_usd for p in parts),
            chunks=len(parts), idle_charged_usd=parts[-1].idle_charged_usd)

    def _others_recently(self) -> bool:
        """Whether another (whole) request was queued within the last ``_RECENT_NS``: a client
        that sent one a moment ago is likely to send the next while this chunk runs. Without it,
        a chunk formed in the gap between a closed-loop client's requests ran at full size
        (4 rows of 256 tokens: 132 ms on 2 cores) and the next small request waited for all of
        it (small requests' p99 was 9-14x idle, benchmarks/results/worker-engines.md)."""
        return self._last_submit_ns is not None and self._clock() - self._last_submit_ns < _RECENT_NS

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
            self._executing = 0
        self._ran_on_loop(execution.busy_ns)
        batch_usd = self._account(execution, rows, 1)
        return BatchResult(outputs=execution.outputs, batch_rows=rows, queue_ns=0,
                           busy_ns=execution.busy_ns, cost_usd=batch_usd,
                           idle_charged_usd=self._stats.figures().idle_charged_window)

    # -- the loop ------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                while not self._queue:
                    await self._next_arrival()
                # the batch forms when the engine is free (it may be running another model's)
                async with self._gate:
                    self._holding = True
                    batch = self._form()
                    if batch:
                        await self._execute(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive any one batch
                log.exception("batcher of model %s: unexpected error", self._label)
            finally:
                self._holding = False

    async def _next_arrival(self) -> None:
        self._arrived.clear()
        await self._arrived.wait()

    def _fits(self, batch: list[_Pending], rows: int, width: int, item: _Pending) -> bool:
        if not self._batched or item.signature != batch[0].signature or rows + item.rows > self._limit:
            return False
        if not self._tokens:
            return True
        return (item.bucket == batch[0].bucket
                and (rows + item.rows) * max(width, item.width) <= self._policy.batch_token_budget)

    def _form(self) -> list[_Pending]:
        """Take the oldest live request and every queued request that fits with it."""
        waiting = 0
        batch: list[_Pending] = []
        kept: collections.deque[_Pending] = collections.deque()
        rows = width = 0
        while self._queue:
            item = self._queue.popleft()
            if item.future.done():
                continue
            waiting += 1
            if not batch:
                batch, rows, width = [item], item.rows, item.width
            elif self._fits(batch, rows, width, item):
                batch.append(item)
                rows, width = rows + item.rows, max(width, item.width)
            else:
                kept.append(item)
        self._queue = kept
        if batch:
            self.batches_formed += 1
            self.requests_batched += len(batch)
            self.requests_waiting += waiting
            self._meters.batched_requests += len(batch)
            self._meters.waiting_requests += waiting
        return batch

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
            self._executing = 0
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
            self._executing = 0
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
        inputs = _concatenate(live) if self._batched else _arrays(live[0].inputs)
        self._executing = len(live)
        return live, inputs, sum(item.rows for item in live)

    def _expired(self, now: int, enqueued_ns: int) -> InferenceError:
        return InferenceError(
            ErrorKind.DEADLINE_EXCEEDED,
            f"deadline passed after {(now - enqueued_ns) / 1e6:.1f} ms in the queue "
            f"of model '{self._label}'")
    def _failure(self, rows: int, exc: Exception) -> InferenceError:
        _errors.error(f"{self._label}:{type(exc).__name__}", "model %s failed on a batch of %d rows",
                      self._label, rows, exc_info=exc)
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
        idle_charged = self._stats.figures().idle_charged_window
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
                    cost_usd=batch_usd * item.rows / rows, idle_charged_usd=idle_charged))

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


# a request queued this recently before a huge one counts as competing with its first chunk (small
# requests come and go between a huge one's chunks; at the first there is no "meanwhile" to look at)
_RECENT_NS = 1_000_000_000
_PROBE_WITHIN = 4  # try the loop when the thread measure is under this many times the limit ...
_PROBE_EVERY = 64  # ... at most once per this many batches on the model thread


def _average(mean: float | None, sample: int) -> float:
    return float(sample) if mean is None else 0.8 * mean + 0.2 * sample


def _payload_bytes(inputs: Arrays) -> int:
    """Bytes of the request's data (for BYTES tensors, the strings, not the object pointers)."""
    total = 0
    for a in inputs.values():
        total += sum(len(x) for x in a.reshape(-1)) if a.dtype == object else int(a.nbytes)
    return total


def _arrays(inputs: Arrays | TokenBatch) -> Arrays:
    return inputs.arrays if isinstance(inputs, TokenBatch) else inputs


def _concatenate(batch: list[_Pending]) -> Arrays:
    first = batch[0].inputs
    if isinstance(first, TokenBatch):
        parts = [item.inputs for item in batch]
        return TokenBatch.concatenate(parts).arrays  # type: ignore[arg-type]
    if len(batch) == 1:
        return dict(first)
    arrays = [_arrays(item.inputs) for item in batch]
    return {name: np.concatenate([a[name] for a in arrays], axis=0) for name in first}
