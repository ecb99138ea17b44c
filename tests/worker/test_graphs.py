"""CUDA graphs for small batches (gpupool_worker.engine.graphs).

The bucketing, padding and slicing are pure functions, checked here on a CPU, including that padding
a batch into its bucket and slicing the result back gives the unpadded batch's embeddings. The
capture and replay tests need a CUDA device and are skipped without one; on a GPU machine run
``GPUPOOL_TEST_CUDA=1 python -m pytest -c /dev/null --rootdir . --noconftest tests/worker/test_graphs.py``
(no tokenizers needed: the encoder is built from random weights in memory).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from gpupool_worker.engine.graphs import (
    DEFAULT_BATCH_BUCKETS,
    DEFAULT_SEQ_BUCKETS,
    GraphBuckets,
    GraphedForward,
    copy_padded,
    smallest_fit,
    take_rows,
)
from gpupool_worker.engine.kernels import triton_support
from gpupool_worker.engine.models.encoder import Encoder, EncoderConfig, build_ops
from gpupool_worker.engine.models.examples import random_encoder_weights
from gpupool_worker.engine.precision import EngineKind, Precision

CPU = torch.device("cpu")
CUDA_OK = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA device")

CFG = EncoderConfig(vocab_size=300, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                    max_position=160, type_vocab_size=2, layer_norm_eps=1e-12)


def _tensors(cfg: EncoderConfig = CFG, seed: int = 0) -> dict[str, torch.Tensor]:
    return random_encoder_weights(cfg, seed)


def _batch(rows: int, tokens: int, device: torch.device, seed: int = 1) -> tuple[torch.Tensor, ...]:
    """Ragged rows: each row's real length in [1, tokens], padded with id 0 / mask 0."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, CFG.vocab_size, (rows, tokens), generator=gen)
    mask = torch.ones(rows, tokens, dtype=torch.int64)
    lengths = torch.randint(1, tokens + 1, (rows,), generator=gen)
    lengths[0] = tokens  # at least one row uses the whole width
    for i, n in enumerate(lengths.tolist()):
        mask[i, n:] = 0
        ids[i, n:] = 0
    types = torch.zeros_like(ids)
    types[:, tokens // 2:] = 1
    return ids.to(device), mask.to(device), (types * mask).to(device)


# --- pure functions (any device) ---------------------------------------------------------------


def test_smallest_fit_picks_the_smallest_bucket_that_holds_n() -> None:
    b = DEFAULT_BATCH_BUCKETS
    assert [smallest_fit(n, b) for n in (1, 2, 3, 5, 8, 9, 31, 32)] == [1, 2, 4, 8, 8, 16, 32, 32]
    assert smallest_fit(33, b) is None
    assert smallest_fit(0, b) is None


@pytest.mark.parametrize("buckets", [(1,), (3,), (1, 2, 4, 8, 16, 32), (5, 6, 100, 257), (16, 32, 64, 128)])
def test_smallest_fit_is_minimal(buckets: tuple[int, ...]) -> None:
    for n in range(1, 300):
        fitting = [b for b in buckets if b >= n]
        assert smallest_fit(n, buckets) == (min(fitting) if fitting else None)


def test_buckets_map_a_batch_or_send_it_to_the_plain_path() -> None:
    g = GraphBuckets()
    assert g.bucket(1, 7) == (1, 16)
    assert g.bucket(3, 17) == (4, 32)
    assert g.bucket(32, 128) == (32, 128)
    assert g.bucket(33, 16) is None  # beyond the largest batch bucket
    assert g.bucket(8, 129) is None  # beyond the largest sequence bucket


@pytest.mark.parametrize("bad", [(), (0, 2), (4, 2), (2, 2, 4)])
def test_buckets_must_be_positive_distinct_ascending(bad: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="batch buckets"):
        GraphBuckets(batch=bad)
    with pytest.raises(ValueError, match="seq buckets"):
        GraphBuckets(seq=bad)


def test_reachable_buckets_are_bounded_by_the_model_limits_largest_first() -> None:
    g = GraphBuckets()
    everything = g.reachable(None, None)
    assert len(everything) == len(DEFAULT_BATCH_BUCKETS) * len(DEFAULT_SEQ_BUCKETS) == 24
    assert everything[0] == (32, 128)
    assert everything[-1] == (1, 16)
    sizes = [b * s for b, s in everything]
    assert sizes == sorted(sizes, reverse=True)
    assert g.reachable(1000, 4096) == everything  # limits past the buckets: all of them
    small = g.reachable(8, 40)  # batches up to 8 rows, up to 40 tokens
    assert {b for b, _ in small} == {1, 2, 4, 8}
    assert {s for _, s in small} == {16, 32, 64}  # 40 tokens land in the 64 bucket
    assert g.reachable(5, 16) == [(8, 16), (4, 16), (2, 16), (1, 16)]


def test_copy_padded_fills_the_rest_and_refuses_what_does_not_fit() -> None:
    dst = torch.full((4, 6), 7, dtype=torch.int64)
    src = torch.arange(1, 7, dtype=torch.int64).reshape(2, 3)
    copy_padded(dst, src)
    want = torch.zeros(4, 6, dtype=torch.int64)
    want[:2, :3] = src
    assert torch.equal(dst, want)
    copy_padded(dst, torch.ones(4, 6, dtype=torch.int32))  # exact fit, dtype converted
    assert torch.equal(dst, torch.ones(4, 6, dtype=torch.int64))
    with pytest.raises(ValueError, match="does not fit"):
        copy_padded(dst, torch.ones(5, 6, dtype=torch.int64))
    with pytest.raises(ValueError, match="does not fit"):
        copy_padded(dst, torch.ones(4, 7, dtype=torch.int64))


def test_take_rows_copies_out_of_the_static_buffer() -> None:
    static = torch.arange(12.0).reshape(4, 3)
    rows = take_rows(static, 2)
    static.zero_()  # the next replay overwrites the buffer
    assert torch.equal(rows, torch.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize(("rows", "tokens"), [(1, 1), (1, 9), (3, 17), (5, 64), (7, 100)])
def test_padding_into_the_bucket_and_slicing_gives_the_unpadded_embeddings(rows: int, tokens: int) -> None:
    """What a graph replay computes, done with plain ops on the CPU: same embeddings."""
    encoder = Encoder(CFG, _tensors(), ops=build_ops(EngineKind.EAGER), precision=Precision.FP32, device=CPU)
    args = _batch(rows, tokens, CPU)
    key = GraphBuckets().bucket(rows, tokens)
    assert key is not None
    static = [torch.full(key, 99, dtype=torch.int64) for _ in args]
    for dst, src in zip(static, args, strict=True):
        copy_padded(dst, src)
    with torch.inference_mode():
        want = encoder(*args)
        got = take_rows(encoder(*static), rows)
    assert got.shape == want.shape == (rows, CFG.hidden_size)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_graphs_are_off_on_a_cpu_and_the_plain_path_runs() -> None:
    encoder = Encoder(CFG, _tensors(), ops=build_ops(EngineKind.EAGER), precision=Precision.FP32, device=CPU)
    graphed = GraphedForward(encoder.forward, CPU)
    assert not graphed.enabled
    assert "not a CUDA device" in graphed.describe()
    assert graphed.capture() == 0
    args = _batch(3, 10, CPU)
    with torch.inference_mode():
        torch.testing.assert_close(graphed(*args), encoder(*args), atol=0, rtol=0)
    assert graphed.captured == []
    assert "disabled by configuration" in GraphedForward(encoder.forward, CPU, enabled=False).describe()


def test_model_json_takes_cuda_graphs_and_the_default_is_on() -> None:
    pytest.importorskip("pydantic")
    from gpupool_worker.engine.repository import ModelConfig, RuntimeDefaults

    assert ModelConfig(kind="sentence-embedding").cuda_graphs is None
    assert ModelConfig.model_validate({"kind": "sentence-embedding", "cuda_graphs": False}).cuda_graphs is False
    assert RuntimeDefaults().cuda_graphs is True


# --- capture and replay (CUDA) ------------------------------------------------------------------

ENGINES = [EngineKind.EAGER] + ([EngineKind.TRITON] if CUDA_OK and triton_support(torch.device("cuda"))[0] else [])


# Triton INT8 is left out: its autotuning per row bucket costs minutes of kernel compiles here
ENGINE_PRECISIONS = [(e, p) for e in ENGINES for p in Precision if not (e is EngineKind.TRITON and p is Precision.INT8)]


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize(("engine", "precision"), ENGINE_PRECISIONS, ids=lambda v: v.value)
def test_graph_replay_matches_the_plain_path(engine: EngineKind, precision: Precision) -> None:
    dev = torch.device("cuda")
    encoder = Encoder(CFG, _tensors(), ops=build_ops(engine), precision=precision, device=dev)
    graphed = GraphedForward(encoder.forward, dev, buckets=GraphBuckets(batch=(1, 2, 4, 8), seq=(16, 32, 64)))
    tol = 1e-4 if precision is Precision.FP32 else 2e-2
    with torch.inference_mode():
        for seed, (rows, tokens) in enumerate([(1, 5), (3, 17), (8, 64), (2, 17), (3, 17), (5, 33)]):
            args = _batch(rows, tokens, dev, seed=seed)
            got = graphed(*args)
            want = encoder(*args)
            assert got.shape == (rows, CFG.hidden_size)
            torch.testing.assert_close(got, want, atol=tol, rtol=tol)
        assert graphed.enabled, graphed.off_reason
        assert graphed.captured == [(1, 16), (2, 32), (4, 32), (8, 64)]
        out_a = graphed(*_batch(3, 17, dev, seed=10))
        out_b = graphed(*_batch(3, 17, dev, seed=11))  # same graph replayed: the first result stays
        torch.testing.assert_close(out_a, encoder(*_batch(3, 17, dev, seed=10)), atol=tol, rtol=tol)
        assert not torch.equal(out_a, out_b)
        # beyond the buckets: the plain path, nothing new captured
        big = _batch(9, 70, dev)
        torch.testing.assert_close(graphed(*big), encoder(*big), atol=0, rtol=0)
        assert len(graphed.captured) == 4


@needs_cuda
@pytest.mark.gpu
def test_warmup_capture_is_bounded_by_the_model_limits() -> None:
    dev = torch.device("cuda")
    encoder = Encoder(CFG, _tensors(), ops=build_ops(EngineKind.EAGER), precision=Precision.FP16, device=dev)
    graphed = GraphedForward(encoder.forward, dev)
    assert graphed.capture(8, 40) == 4 * 3
    assert graphed.capture(None, None) == len(DEFAULT_BATCH_BUCKETS) * len(DEFAULT_SEQ_BUCKETS)
    assert "24 captured" in graphed.describe()


@needs_cuda
@pytest.mark.gpu
def test_a_failed_capture_switches_graphs_off_once_and_the_plain_path_serves(
        caplog: pytest.LogCaptureFixture) -> None:
    dev = torch.device("cuda")
    encoder = Encoder(CFG, _tensors(), ops=build_ops(EngineKind.EAGER), precision=Precision.FP32, device=dev)

    def syncs(ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        if mask.sum().item() < 0:  # a host sync: not capturable
            raise AssertionError
        return encoder.forward(ids, mask, types)

    graphed = GraphedForward(syncs, dev, name="broken")
    with caplog.at_level(logging.WARNING, logger="gpupool_worker.engine.graphs"), torch.inference_mode():
        for rows, tokens in [(2, 10), (4, 30), (1, 5)]:
            args = _batch(rows, tokens, dev)
            torch.testing.assert_close(graphed(*args), encoder(*args), atol=0, rtol=0)
    assert not graphed.enabled
    assert "capture of batch 2 x seq 16 failed" in graphed.off_reason
    assert graphed.captured == []
    assert len([r for r in caplog.records if "CUDA graphs switched off" in r.message]) == 1


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.value)
def test_served_model_captures_at_warmup_and_matches_graphs_off(tmp_path: Path, engine: EngineKind) -> None:
    pytest.importorskip("tokenizers")
    import numpy as np

    from gpupool_worker.engine.models.examples import write_tiny_encoder
    from gpupool_worker.engine.models.sentence import SentenceEmbeddingModel

    weights = write_tiny_encoder(tmp_path / "tiny") / "weights"
    dev = torch.device("cuda")

    def model(graphs: bool) -> SentenceEmbeddingModel:
        m = SentenceEmbeddingModel("tiny", "1", weights, engine=engine, precision=Precision.FP16, device=dev,
                                   max_batch_size=8, max_sequence_length=64, cuda_graphs=graphs)
        m.warmup()
        return m

    on, off = model(True), model(False)
    assert on.graphs is not None
    assert off.graphs is not None
    assert on.describe()["cuda_graphs"].startswith("on (12 captured")  # batch 1,2,4,8 x seq 16,32,64
    assert off.describe()["cuda_graphs"] == "off (disabled by configuration)"
    texts = ["hello world", "the quick brown fox jumps over the lazy dog", "gpu", "mig slices cost less"]
    for rows in (1, 3, 4):
        batch = {"text": np.array([t.encode() for t in texts[:rows]], dtype=object)}
        np.testing.assert_allclose(on.execute(batch).outputs["embedding"],
                                   off.execute(batch).outputs["embedding"], atol=2e-3)
    assert len(on.graphs.captured) == 12
