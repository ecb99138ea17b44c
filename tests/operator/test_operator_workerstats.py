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
    # busy-only: the batches' priced device time (0.01 $ here) over 2,000 inferences
    assert load.usd_per_million_inferences_busy == pytest.approx(5.0)
    # what status shows: the replica's 10 s at its price and share, over the same inferences
    assert load.usd_per_million_inferences == pytest.approx(3.43 / 7 * 10 / 3600 / 2000 * 1e6)
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


def _worker(price: float, share: float = 1.0) -> WorkerMetrics:
    return WorkerMetrics(CostModel(price_per_hour_usd=price, device_share=share))


def test_idle_time_is_charged_and_shared_among_a_pods_models_by_busy_time() -> None:
    metrics = _worker(3.6, 0.5)  # 1.8 $/h: 0.005 $ per 10 s
    before = parse_exposition(metrics.exposition().decode(), at=0.0)
    busy_a, busy_b = metrics.model("a"), metrics.model("b")
    # "a" ran 1.5 s of the 10, "b" 0.5 s: the device sat idle 8 s, and that is charged too
    busy_a.inferences, busy_a.busy_seconds, busy_a.cost_usd = 1000, 1.5, 1.5 * 1.8 / 3600
    busy_b.inferences, busy_b.busy_seconds, busy_b.cost_usd = 100, 0.5, 0.5 * 1.8 / 3600
    after = parse_exposition(metrics.exposition().decode(), at=10.0)
    assert (after.price_per_hour_usd, after.device_share) == (3.6, 0.5)
    a = load_between([before], [after], "a")
    b = load_between([before], [after], "b")
    assert a.usd_per_million_inferences == pytest.approx(0.005 * 0.75 / 1000 * 1e6)  # 3.75 $/1M
    assert b.usd_per_million_inferences == pytest.approx(0.005 * 0.25 / 100 * 1e6)  # 12.5 $/1M
    assert a.usd_per_million_inferences_busy == pytest.approx(1.5 * 1.8 / 3600 / 1000 * 1e6)  # 0.75 $/1M
    # the idle-charged figures add up to the replica's whole cost
    total = (a.usd_per_million_inferences * 1000 + b.usd_per_million_inferences * 100) / 1e6
    assert total == pytest.approx(0.005)


def test_two_replicas_add_their_seconds_and_their_inferences() -> None:
    samples = []
    for served in (3000, 1000):
        metrics = _worker(7.2)  # 0.02 $ per 10 s each
        first = parse_exposition(metrics.exposition().decode(), at=100.0)
        meters = metrics.model("m")
        meters.inferences, meters.busy_seconds = served, 1.0
        samples.append((first, parse_exposition(metrics.exposition().decode(), at=110.0)))
    load = load_between([s[0] for s in samples], [s[1] for s in samples], "m")
    assert load.usd_per_million_inferences == pytest.approx(0.04 / 4000 * 1e6)  # 10 $/1M
    assert load.replicas == 2


def test_a_worker_that_reports_no_price_falls_back_to_its_busy_cost() -> None:
    text = ("# TYPE gpupool_worker_inferences_total counter\n"
            'gpupool_worker_inferences_total{model="m"} %d\n'
            "# TYPE gpupool_worker_cost_usd_total counter\n"
            'gpupool_worker_cost_usd_total{model="m"} %s\n')
    before = parse_exposition(text % (0, "0"), at=0.0)
    after = parse_exposition(text % (1000, "0.002"), at=10.0)
    assert after.price_per_hour_usd is None
    load = load_between([before], [after], "m")
    assert load.usd_per_million_inferences == pytest.approx(2.0)
    assert load.usd_per_million_inferences_busy == pytest.approx(2.0)


def test_the_pools_status_shows_the_idle_charged_price_per_million() -> None:
    """The path status takes: the worker's exposition -> ModelLoad -> pool_status (as the operator
    loop hands it its loads); a CPU replica of 2 cores at 0.048 $/vCPU-h, mostly idle."""
    from datetime import UTC, datetime

    from operator_builders import PoolBuilder

    from gpupool_operator.adapters.demands import parse_pool
    from gpupool_operator.adapters.status import pool_status
    from gpupool_operator.core.demand import Shape, ShapeKind
    from gpupool_operator.core.plan import Assignment, Plan

    body = PoolBuilder("p").cpu("c", cores=2, replicas=1).obj()
    body["metadata"].update(namespace="ns", uid="uid-1", generation=1)
    pool = parse_pool(body).pool
    assert pool is not None
    metrics = _worker(0.096)  # what the operator passes a 2-core CPU replica
    before = parse_exposition(metrics.exposition().decode(), at=0.0)
    meters = metrics.model("c")
    meters.inferences, meters.busy_seconds, meters.cost_usd = 500, 6.0, 6.0 * 0.096 / 3600
    after = parse_exposition(metrics.exposition().decode(), at=60.0)  # busy 6 s of 60
    load = load_between([before], [after], "c")
    a = Assignment("ns/p/c", 0, Shape(ShapeKind.CPU, cpu_millis=2000, memory_mib=1024), "cpu-0", cost=0.096)
    pod = {"metadata": {"name": "p-c-0"}, "spec": {"nodeName": "cpu-0"},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    status = pool_status(pool, Plan(assignments=(a,)), {"ns/p/c": [pod]}, {("ns/p/c", 0): "p-c-0"}, {"ns/p/c": 1},
                         None, datetime(2026, 1, 1, tzinfo=UTC), loads={"ns/p/c": load})
    idle_charged = 0.096 * 60 / 3600 / 500 * 1e6  # 3.2 $/1M: the whole minute, over 500 inferences
    busy_only = 0.096 * 6 / 3600 / 500 * 1e6  # 0.32 $/1M: what charging busy time only would show
    assert float(status.models[0].usd_per_million_inferences) == pytest.approx(idle_charged, rel=1e-3)
    assert float(status.usd_per_million_inferences) == pytest.approx(idle_charged, rel=1e-3)
    assert load.usd_per_million_inferences_busy == pytest.approx(busy_only)
