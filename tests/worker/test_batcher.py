"""The dynamic batcher, driven directly (no gRPC) with a real model that can be held shut."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gpupool_worker.engine.batcher import BatchPolicy, DynamicBatcher
from gpupool_worker.engine.costing import CostModel
from gpupool_worker.engine.errors import ErrorKind, InferenceError
from gpupool_worker.engine.metrics import WorkerMetrics
from gpupool_worker.engine.statistics import ModelStatistics

from .gate_model import GateModel

COST = CostModel(price_per_hour_usd=3.6, device_share=0.5)


def make(model: GateModel, **policy: int) -> tuple[DynamicBatcher, ModelStatistics, WorkerMetrics]:
    stats = ModelStatistics(model.name, "1", COST)
    metrics = WorkerMetrics(COST)
    policy.setdefault("inline_below_us", 0)  # the gate blocks: it must never run on the event loop
    batcher = DynamicBatcher(model, BatchPolicy(**policy), stats, metrics)
    batcher.start()
    return batcher, stats, metrics


def rows(n: int, value: float, width: int = 4) -> dict[str, np.ndarray]:
    return {"x": np.full((n, width), value, dtype=np.float32)}


async def wait_entered(model: GateModel) -> None:
    await asyncio.to_thread(model.entered.acquire)


async def test_a_lone_request_runs_alone_and_gets_its_own_rows_back() -> None:
    model = GateModel()
    batcher, stats, _ = make(model, max_batch_size=8, max_queue_delay_us=0)
    result = await batcher.infer(rows(3, 1.5))
    np.testing.assert_array_equal(result.outputs["y"], np.full((3, 4), 3.0, np.float32))
    assert result.batch_rows == 3
    snap = stats.snapshot()
    assert (snap.inference_count, snap.execution_count) == (3, 1)
    await batcher.stop()


async def test_queued_requests_are_batched_and_split_back_in_order() -> None:
    model = GateModel()
    batcher, stats, _ = make(model, max_batch_size=8, max_queue_delay_us=0)
    model.gate.clear()
    first = asyncio.create_task(batcher.infer(rows(1, 0.0)))
    await wait_entered(model)  # the first batch is on the device; the rest must queue
    others = [asyncio.create_task(batcher.infer(rows(n, float(i + 1)))) for i, n in enumerate([2, 1, 3])]
    while batcher.queue_depth < 3:
        await asyncio.sleep(0.001)
    assert batcher.executing == 1
    model.gate.set()
    await first
    results = await asyncio.gather(*others)
    assert model.batches == [1, 6]
    for i, (n, result) in enumerate(zip([2, 1, 3], results, strict=True)):
        np.testing.assert_array_equal(result.outputs["y"], np.full((n, 4), 2.0 * (i + 1), np.float32))
        assert result.batch_rows == 6
    # the batch's cost is split in proportion to rows and adds up to what statistics recorded
    snap = stats.snapshot()
    total = (await first).cost_usd + sum(r.cost_usd for r in results)
    assert total == pytest.approx(snap.cost_total_usd)
    assert results[2].cost_usd == pytest.approx(3 * results[1].cost_usd)
    assert [b.batch_size for b in snap.batch_stats] == [1, 6]
    await batcher.stop()


async def test_a_batch_never_exceeds_max_batch_size() -> None:
    model = GateModel(max_batch_size=4)
    batcher, _, _ = make(model, max_batch_size=4, max_queue_delay_us=0)
    model.gate.clear()
    first = asyncio.create_task(batcher.infer(rows(1, 0.0)))
    await wait_entered(model)
    queued = [asyncio.create_task(batcher.infer(rows(n, 1.0))) for n in [3, 2, 2, 1, 4]]
    while batcher.queue_depth < 5:
        await asyncio.sleep(0.001)
    model.gate.set()
    await asyncio.gather(first, *queued)
    assert max(model.batches) <= 4
    assert sum(model.batches) == 13
    await batcher.stop()


async def test_requests_with_different_shapes_do_not_share_a_batch() -> None:
    model = GateModel()
    batcher, _, _ = make(model, max_batch_size=8, max_queue_delay_us=0)
    model.gate.clear()
    first = asyncio.create_task(batcher.infer(rows(1, 0.0)))
    await wait_entered(model)
    narrow = asyncio.create_task(batcher.infer(rows(2, 1.0, width=4)))
    wide = asyncio.create_task(batcher.infer(rows(2, 1.0, width=6)))
    narrow2 = asyncio.create_task(batcher.infer(rows(1, 1.0, width=4)))
    while batcher.queue_depth < 3:
        await asyncio.sleep(0.001)
    model.gate.set()
    r_narrow, r_wide, r_narrow2 = await asyncio.gather(narrow, wide, narrow2)
    await first
    assert r_narrow.outputs["y"].shape == (2, 4)
    assert r_wide.outputs["y"].shape == (2, 6)
    assert r_narrow.batch_rows == r_narrow2.batch_rows == 3
    assert r_wide.batch_rows == 2
    await batcher.stop()


async def test_a_full_queue_refuses_with_unavailable() -> None:
    model = GateModel()
    batcher, _, _ = make(model, max_batch_size=8, max_queue_delay_us=0, max_queue_size=2)
    model.gate.clear()
    first = asyncio.create_task(batcher.infer(rows(1, 0.0)))
    await wait_entered(model)
    queued = [asyncio.create_task(batcher.infer(rows(1, 1.0))) for _ in range(2)]
    while batcher.queue_depth < 2:
        await asyncio.sleep(0.001)
    with pytest.raises(InferenceError) as err:
        await batcher.infer(rows(1, 1.0))
    assert err.value.kind is ErrorKind.UNAVAILABLE
    assert "queue is full" in err.value.message
    model.gate.set()
    await asyncio.gather(first, *queued)
    await batcher.stop()


async def test_an_expired_deadline_is_dropped_before_execution() -> None:
    model = GateModel()
    batcher, stats, _ = make(model, max_batch_size=8, max_queue_delay_us=0)
    model.gate.clear()
    first = asyncio.create_task(batcher.infer(rows(1, 0.0)))
    await wait_entered(model)
    expired = asyncio.create_task(batcher.infer(rows(5, 1.0), deadline_ns=0))
    while batcher.queue_depth < 1:
        await asyncio.sleep(0.001)
    model.gate.set()
    await first
    with pytest.raises(InferenceError) as err:
        await expired
    assert err.value.kind is ErrorKind.DEADLINE_EXCEEDED
    assert model.batches == [1]
    assert stats.snapshot().inference_count == 1
    await batcher.stop()


async def test_a_cancelled_request_is_not_executed() -> None:
    model = GateModel()
    batcher, _, _ = make(model, max_batch_size=8, max_queue_delay_us=0)
    model.gate.clear()
    first = asyncio.create_task(batcher.infer(rows(1, 0.0)))
    await wait_entered(model)
    gone = asyncio.create_task(batcher.infer(rows(4, 1.0)))
    kept = asyncio.create_task(batcher.infer(rows(2, 1.0)))
    while batcher.queue_depth < 2:
        await asyncio.sleep(0.001)
    gone.cancel()
    model.gate.set()
    await first
    assert (await kept).batch_rows == 2
    assert model.batches == [1, 2]
    await batcher.stop()


async def test_a_failing_batch_fails_only_its_requests_and_the_batcher_lives_on() -> None:
    model = GateModel()
    batcher, stats, _ = make(model, max_batch_size=8, max_queue_delay_us=0)
    with pytest.raises(InferenceError) as err:
        await batcher.infer(rows(2, -1.0))
    assert err.value.kind is ErrorKind.INTERNAL
    assert "negative input" in err.value.message
    ok = await batcher.infer(rows(1, 2.0))
    np.testing.assert_array_equal(ok.outputs["y"], np.full((1, 4), 4.0, np.float32))
    assert stats.snapshot().execution_count == 1
    await batcher.stop()


async def test_stop_drains_queued_requests_then_refuses_new_ones() -> None:
    model = GateModel()
    batcher, _, _ = make(model, max_batch_size=2, max_queue_delay_us=0)
    model.gate.clear()
    first = asyncio.create_task(batcher.infer(rows(1, 0.0)))
    await wait_entered(model)
    queued = [asyncio.create_task(batcher.infer(rows(2, 1.0))) for _ in range(3)]
    while batcher.queue_depth < 3:
        await asyncio.sleep(0.001)
    stopping = asyncio.create_task(batcher.stop(drain=True))
    await asyncio.sleep(0)
    with pytest.raises(InferenceError) as err:
        await batcher.infer(rows(1, 1.0))
    assert err.value.kind is ErrorKind.UNAVAILABLE
    model.gate.set()
    await stopping
    assert all(t.done() and t.exception() is None for t in [first, *queued])
    assert model.batches == [1, 2, 2, 2]


async def test_queue_delay_lets_a_batch_fill_before_it_closes() -> None:
    # a long delay and max_batch_size reached: the batch closes on size, not on time
    model = GateModel(max_batch_size=4)
    batcher, _, metrics = make(model, max_batch_size=4, max_queue_delay_us=60_000_000)
    results = await asyncio.gather(*(batcher.infer(rows(1, float(i))) for i in range(4)))
    assert model.batches == [4]
    assert all(r.batch_rows == 4 for r in results)
    exposition = metrics.exposition().decode()
    assert 'gpupool_worker_batch_size_bucket{le="4.0",model="gate"} 1.0' in exposition
    await batcher.stop()


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_queue_size"):
        BatchPolicy(max_queue_size=0)
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchPolicy(max_batch_size=-1)


async def test_fast_models_run_on_the_event_loop_after_the_first_batch() -> None:
    import threading

    model = GateModel()
    threads: list[int] = []
    original = model.forward

    def forward(prepared: np.ndarray) -> np.ndarray:
        threads.append(threading.get_ident())
        return original(prepared)  # type: ignore[no-any-return]

    model.forward = forward  # type: ignore[method-assign]
    batcher, _, _ = make(model, max_batch_size=8, max_queue_delay_us=0, inline_below_us=1_000_000)
    for i in range(3):
        result = await batcher.infer(rows(1, float(i)))
        np.testing.assert_array_equal(result.outputs["y"], np.full((1, 4), 2.0 * i, np.float32))
    loop_thread = threading.get_ident()
    assert threads[0] != loop_thread  # unknown cost: measured on the model thread first
    assert threads[1:] == [loop_thread, loop_thread]
    assert batcher.inline_executions == 2
    await batcher.stop()


async def test_a_lone_request_on_an_idle_model_does_not_wait_out_the_queue_delay() -> None:
    # a 60 s delay would time this test out if a lone request waited for company
    model = GateModel()
    batcher, _, _ = make(model, max_batch_size=8, max_queue_delay_us=60_000_000)
    for i in range(3):
        assert (await batcher.infer(rows(1, float(i)))).batch_rows == 1
    assert model.batches == [1, 1, 1]
    await batcher.stop()


async def test_with_the_engine_idle_a_request_runs_at_once_even_right_after_a_batch() -> None:
    # the old timer waited up to the queue delay for the last batch's callers: a 60 s delay
    # would time this out
    model = GateModel()
    batcher, _, _ = make(model, max_batch_size=8, max_queue_delay_us=60_000_000)
    await asyncio.gather(*(batcher.infer(rows(1, 1.0)) for _ in range(4)))
    assert (await asyncio.wait_for(batcher.infer(rows(1, 2.0)), 5)).batch_rows == 1
    assert model.batches == [4, 1]
    await batcher.stop()


async def test_a_batch_forms_when_the_engine_frees_and_carries_everything_waiting() -> None:
    model = GateModel()
    batcher, _, _ = make(model, max_batch_size=8, max_queue_delay_us=60_000_000)
    model.gate.clear()
    first = asyncio.create_task(batcher.infer(rows(1, 0.0)))
    await wait_entered(model)
    queued = [asyncio.create_task(batcher.infer(rows(1, float(i)))) for i in range(5)]
    while batcher.queue_depth < 5:
        await asyncio.sleep(0.001)
    model.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *queued), 5)
    assert model.batches == [1, 5]
    assert batcher.requests_batched == batcher.requests_waiting == 6
    await batcher.stop()


async def test_models_sharing_the_engine_batch_what_queued_while_another_model_ran() -> None:
    import concurrent.futures

    engine = concurrent.futures.ThreadPoolExecutor(1)
    gate = asyncio.Lock()
    busy, other = GateModel("busy"), GateModel("other")
    made = []
    for model in (busy, other):
        stats = ModelStatistics(model.name, "1", COST)
        b = DynamicBatcher(model, BatchPolicy(max_batch_size=8, inline_below_us=0), stats, WorkerMetrics(COST),
                           executor=engine, engine_gate=gate)
        b.start()
        made.append(b)
    busy.gate.clear()
    held = asyncio.create_task(made[0].infer(rows(1, 0.0)))
    await wait_entered(busy)
    # the engine runs the other model's batch: these wait for it, then go as one batch
    queued = [asyncio.create_task(made[1].infer(rows(1, float(i)))) for i in range(3)]
    while made[1].queue_depth < 3:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.02)
    assert other.batches == []
    busy.gate.set()
    await asyncio.wait_for(asyncio.gather(held, *queued), 5)
    assert other.batches == [3]
    for b in made:
        await b.stop()
    engine.shutdown()


async def test_on_the_event_loop_a_failure_or_an_expired_deadline_fails_only_its_request() -> None:
    model = GateModel()
    batcher, stats, _ = make(model, max_batch_size=8, max_queue_delay_us=0, inline_below_us=1_000_000)
    await batcher.infer(rows(1, 1.0))  # measured on the model thread; from now on, inline
    with pytest.raises(InferenceError) as failed:
        await batcher.infer(rows(1, -1.0))
    assert failed.value.kind is ErrorKind.INTERNAL
    with pytest.raises(InferenceError) as late:
        await batcher.infer(rows(1, 1.0), deadline_ns=0)
    assert late.value.kind is ErrorKind.DEADLINE_EXCEEDED
    assert (await batcher.infer(rows(2, 1.0))).batch_rows == 2
    assert batcher.inline_executions == 1  # the last one (a failed batch records nothing)
    assert stats.snapshot().execution_count == 2
    await batcher.stop()


class _MeasuredModel(GateModel):
    """Reports the busy time the test sets, per thread: the model thread's measure includes the
    hand-offs (as a real tiny model's does), the event loop's does not."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.loop_thread = threading.get_ident()
        self.busy_us = {"loop": 20, "thread": 300}

    def execute(self, inputs):  # type: ignore[no-untyped-def]
        import threading

        from gpupool_worker.engine.model import Execution

        done = super().execute(inputs)
        where = "loop" if threading.get_ident() == self.loop_thread else "thread"
        return Execution(done.outputs, 0, self.busy_us[where] * 1_000, 0)


async def test_a_fast_model_measured_slow_on_the_thread_is_tried_on_the_loop() -> None:
    # 300 us on the thread (over the 200 us limit) but 20 us on the loop: it must end up inline
    model = _MeasuredModel()
    batcher, _, _ = make(model, max_batch_size=8, max_queue_delay_us=0, inline_below_us=200)
    for i in range(3):
        await batcher.infer(rows(1, float(i)))
    assert batcher.inline_executions == 2
    # one slow batch on the loop (under twice the limit) does not send it back to the thread ...
    model.busy_us["loop"] = 300
    await batcher.infer(rows(1, 1.0))
    model.busy_us["loop"] = 20
    await batcher.infer(rows(1, 1.0))
    assert batcher.inline_executions == 4
    # ... batches that stay slow there do
    model.busy_us["loop"] = 5_000
    for _ in range(3):
        await batcher.infer(rows(1, 1.0))
    assert batcher.inline_executions == 5
    await batcher.stop()
