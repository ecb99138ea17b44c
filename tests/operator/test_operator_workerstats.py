"""The operator reads the worker's real Prometheus exposition (the worker's own metrics code)."""

from __future__ import annotations

import pytest

from gpupool_operator.adapters.workerstats import load_between, parse_exposition
from gpupool_worker.engine.costing import CostModel
from gpupool_worker.engine.metrics import WorkerMetrics


def test_reads_the_workers_metrics_and_prices_a_million_inferences() -> None:
    metrics = WorkerMetrics(CostModel(price_per_hour_usd=3.43, device_share=1 / 7,
                                      accelerator="NVIDIA-A100-SXM4-80GB", mig_profile="1g.10gb"))
    before = parse_exposition(metrics.exposition().decode(), at=100.0)
    meters = metrics.model("minilm")  # what the worker's batcher and data plane write into
    meters.inferences += 2000
    meters.cost_usd += 0.01
    meters.successes += 400
    meters.inflight = lambda: 3.0
    for _ in range(99):
        meters.request_latency.observe(0.004)
    meters.request_latency.observe(0.3)
    meters.queue_depth = lambda: 12.0  # read at scrape time, like the batcher's live queue
    after = parse_exposition(metrics.exposition().decode(), at=110.0)
    load = load_between([before], [after], "minilm")
    assert load.queue_depth == 12
    assert load.inflight == 3
    assert load.inferences_per_second == pytest.approx(200.0)
    assert load.completions_per_second == pytest.approx(40.0)
    assert load.arrivals_per_second == pytest.approx(40.3)
    assert load.usd_per_million_inferences == pytest.approx(5.0)
    assert load.p99_seconds == pytest.approx(0.005)  # the bucket holding the 99th of 100 requests
    assert load.replicas == 1
    assert load.age_s == pytest.approx(10.0)


def test_nothing_served_means_no_price_per_million() -> None:
    metrics = WorkerMetrics(CostModel(price_per_hour_usd=3.43))
    metrics.model("m")
    first = parse_exposition(metrics.exposition().decode(), at=0.0)
    second = parse_exposition(metrics.exposition().decode(), at=15.0)
    load = load_between([first], [second], "m")
    assert load.usd_per_million_inferences is None
    assert load.p99_seconds is None
