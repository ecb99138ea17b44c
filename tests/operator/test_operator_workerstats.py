"""The operator reads the worker's real Prometheus exposition (the worker's own metrics code)."""

from __future__ import annotations

import asyncio
import copy
import http.server
import threading
import time
from pathlib import Path

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


def _failed_worker_metrics(tmp: Path) -> str:
    """What a real gpupool worker's /metrics says when its model source is unreachable: the worker's
    own repository (FetchFailed from a refused connection) and metrics code, nothing hand-written."""
    from gpupool_worker.engine.models.pool_model import TASKS, PoolModel
    from gpupool_worker.engine.repository import ModelRepository, RepositoryCollector

    repo = ModelRepository(None)
    repo.add_source(PoolModel(name="m", uri="https://127.0.0.1:9/models/m.safetensors", model_format="SafeTensors",
                              task=TASKS["Auto"], tensors={}, cache_root=tmp / "cache", pvc_root=tmp),
                    {"max_batch_size": 8, "max_queue_delay_us": 1000})
    repo.load_all()
    metrics = _worker(0.096)
    metrics.registry.register(RepositoryCollector(repo))
    return metrics.exposition().decode()


class _Metrics(http.server.BaseHTTPRequestHandler):
    text = ""

    def do_GET(self) -> None:
        body = self.text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_worker_that_cannot_fetch_its_model_sets_the_pools_model_load_failed(tmp_path: Path) -> None:
    """The operator loop's own path: a replica pod Running and not Ready (the worker stays up and
    says why) is scraped by the background StatsCollector over real HTTP; the next cycle's report
    sets the pool's ModelLoadFailed with the model, the worker's reason and message, and counts no
    load from it. The cycle itself never scrapes."""
    import aiohttp
    from fake_api import FakeKube
    from operator_builders import PoolBuilder

    from gpupool_operator.adapters.loop import PlacementLoop
    from gpupool_operator.adapters.settings import OperatorSettings
    from gpupool_operator.adapters.store import Kind, Store
    from gpupool_operator.api import default_config

    text = _failed_worker_metrics(tmp_path)
    assert 'reason="FetchFailed"' in text
    assert 'state="UNAVAILABLE"' in text
    handler = type("Handler", (_Metrics,), {"text": text})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    async def scenario() -> None:
        store = Store()
        kube = FakeKube(store)
        node = {"metadata": {"name": "cpu-0000", "labels": {}, "uid": "uid-node-0"},
                "status": {"allocatable": {"cpu": "32", "memory": "128Gi"},
                           "conditions": [{"type": "Ready", "status": "True"}]}}
        store.apply_event(Kind.NODE, "ADDED", kube._stamp(node))
        store.apply_event(Kind.CONFIG, "ADDED", kube._stamp(default_config().to_wire()))
        body = PoolBuilder("p", "a").cpu("m", replicas=1).obj()
        body["metadata"].update(uid="uid-pool-0", generation=1)
        store.apply_event(Kind.POOL, "ADDED", kube._stamp(body))
        loop = PlacementLoop(kube, store, OperatorSettings())
        loop._seeded = True
        kube.feed = loop.observer.feed
        loop.stats.port = server.server_address[1]
        await loop.cycle()
        kube.bind_all()
        (pod,) = [p for p in store.all(Kind.POD) if p["metadata"]["namespace"] == "a"]
        pod = copy.deepcopy(pod)  # the kubelet: the worker runs, not Ready, at an address
        pod["status"] = {"phase": "Running", "podIP": "127.0.0.1", "conditions": [
            {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}]}
        kube.feed(Kind.POD, "MODIFIED", kube._stamp(pod))
        await loop.cycle()
        status = (store.get(Kind.POOL, "a/p") or {})["status"]
        assert all(c["type"] != "ModelLoadFailed" or c["status"] == "False" for c in status["conditions"])
        assert f"a/{pod['metadata']['name']}" in loop.stats.targets  # not Ready, Running: scraped
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            for _ in range(2):  # what StatsCollector.run does in the background, every period
                await loop.stats.sweep(session)
        assert loop.stats.samples[f"a/{pod['metadata']['name']}"][0] is not None  # two samples: a load if Ready
        await loop.cycle()
        status = (store.get(Kind.POOL, "a/p") or {})["status"]
        cond = next(c for c in status["conditions"] if c["type"] == "ModelLoadFailed")
        assert (cond["status"], cond["reason"]) == ("True", "FetchFailed")
        assert f"model m (replica {pod['metadata']['name']}): FetchFailed: " in cond["message"]
        assert "https://127.0.0.1:9/models/m.safetensors" in cond["message"]
        assert "Connection refused" in cond["message"]
        assert status["models"][0]["readyReplicas"] == 0
        assert "usdPerMillionInferences" not in status["models"][0]  # a not-Ready worker's sample is no load
        seen = await loop.observe(time.time())
        assert loop.stats.loads(seen.replicas, time.time()) == {}
        assert [(f.model, f.reason) for f in seen.worker_failures["a/p/m"]] == [("m", "FetchFailed")]
        warned = [o for k, o in kube.objects.items() if "/events/" in k and o.get("reason") == "ModelLoadFailed"]
        assert warned
        assert "FetchFailed" in warned[0]["message"]

    try:
        asyncio.run(scenario())
    finally:
        server.shutdown()
        server.server_close()
