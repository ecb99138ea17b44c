"""The GPU decisions that can be checked without a GPU: per-batch path choice (Triton kernels or
eager, whichever measured faster) and how the GPU benchmark compares and prices."""

from __future__ import annotations

import pytest
import torch

from benchmarks.worker.gpu_report import equal_precision, slice_per_million
from gpupool_worker.engine.models.encoder import Encoder, EncoderConfig, TorchOps
from gpupool_worker.engine.models.examples import random_encoder_weights
from gpupool_worker.engine.precision import Precision
from gpupool_worker.engine.selection import PathDispatch, pick_paths


def test_the_faster_path_serves_each_batch_size_and_ties_keep_the_preferred() -> None:
    timings = {1: {"triton": 0.50, "eager": 0.20},     # small batch: the kernels lose, eager serves it
               8: {"triton": 0.30, "eager": 0.301},    # within 2 %: the preferred path stays
               32: {"triton": 0.40, "eager": 0.90},
               256: {"triton": 2.0, "eager": 5.0}}
    assert pick_paths(timings, preferred="triton") == {1: "eager", 8: "triton", 32: "triton", 256: "triton"}
    assert pick_paths({4: {"a": 1.0, "b": 1.0}}) == {4: "a"}
    with pytest.raises(ValueError, match="no timings"):
        pick_paths({1: {}})


def test_dispatch_routes_by_bucket_and_both_paths_give_the_same_embeddings() -> None:
    cfg = EncoderConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                        max_position=64, type_vocab_size=2, layer_norm_eps=1e-12)
    tensors = random_encoder_weights(cfg, 0)
    cpu = torch.device("cpu")
    a = Encoder(cfg, tensors, ops=TorchOps(), precision=Precision.FP32, device=cpu)
    calls: list[str] = []

    def path(name: str, enc: Encoder):  # type: ignore[no-untyped-def]
        def run(*args: torch.Tensor) -> torch.Tensor:
            calls.append(name)
            return enc.forward(*args)
        return run

    dispatch = PathDispatch({"triton": path("triton", a), "eager": path("eager", a)},
                            {1: "eager", 32: "triton"})
    assert [dispatch.path_for(r) for r in (1, 2, 32, 500)] == ["eager", "triton", "triton", "triton"]
    ids = torch.randint(0, 64, (3, 10))
    mask = torch.ones_like(ids)
    out = dispatch(3, ids, mask, torch.zeros_like(ids))
    torch.testing.assert_close(out, a.forward(ids, mask, torch.zeros_like(ids)))
    assert calls == ["triton"]
    assert dispatch.describe() == "<=1: eager, <=32: triton"
    with pytest.raises(ValueError, match="do not exist"):
        PathDispatch({"eager": a.forward}, {1: "triton"})


def test_gpu_comparisons_are_at_equal_precision_with_their_goals() -> None:
    rows = [
        {"engine": "eager", "precision": "fp32", "batch": 256, "inferences_per_s": 30_000},
        {"engine": "triton", "precision": "bf16", "batch": 256, "inferences_per_s": 78_000},
        {"engine": "eager", "precision": "bf16", "batch": 256, "inferences_per_s": 68_000},
        {"engine": "eager", "precision": "bf16", "batch": 1, "inferences_per_s": 2_000},
        {"engine": "triton", "precision": "bf16", "batch": 1, "inferences_per_s": 1_000},
    ]
    got = equal_precision(rows)
    # bf16 kernels against bf16 eager, not against fp32 (which would read 2.6x)
    assert [(r["precision"], r["batch"], round(r["ratio"], 2), r["met"]) for r in got] == [
        ("bf16", 1, 0.5, False), ("bf16", 256, 1.15, False)]


def test_a_slice_price_per_million_says_whether_it_was_measured_or_modelled() -> None:
    usd, basis = slice_per_million(6.88, 0.5, measured_ips=10_000)
    assert usd == pytest.approx(6.88 * 0.5 / 3600 * 1e6 / 10_000)
    assert basis == "measured on the slice"
    usd, basis = slice_per_million(6.88, 0.5, whole_gpu_ips=70_000, compute_share=3 / 7)
    assert usd == pytest.approx(6.88 * 0.5 / 3600 * 1e6 / 30_000)
    assert basis.startswith("modelled from compute share")
    with pytest.raises(ValueError, match="no throughput measured"):
        slice_per_million(6.88, 0.5)
