"""The operator reads the worker's real Prometheus exposition (the worker's own metrics code)."""

from __future__ import annotations

import pytest

from gpupool_operator.adapters.workerstats import load_between, parse_exposition


def test_reads_the_workers_metrics_and_prices_a_million_inferences() -> None:
    costing = pytest.importorskip("gpupool_worker.engine.costing")
    metrics_mod = pytest.importorskip("gpupool_worker.engine.metrics")
    import inspect

    params = inspect.signature(costing.CostModel).parameters
    kwargs = {k: v for k, v in {"price_per_hour_usd": 3.43, "device_share": 1 / 7,
                                "accelerator": "NVIDIA-A100-SXM4-80GB", "mig_profile": "1g.10gb"}.items()
              if k in params}
    metrics = metrics_mod.WorkerMetrics(costing.CostModel(**kwargs))
    before = parse_exposition(metrics.exposition().decode(), at=100.0)
    meters = metrics.model("minilm")  # what the worker's batcher and data plane write into
    meters.inferences += 2000
    meters.cost_usd += 0.01
    meters.queue_depth = lambda: 12.0  # read at scrape time, like the batcher's live queue
    after = parse_exposition(metrics.exposition().decode(), at=110.0)
    load = load_between([before], [after], "minilm")
    assert load.queue_depth == 12
    assert load.inferences_per_second == pytest.approx(200.0)
    assert load.usd_per_million_inferences == pytest.approx(5.0)
