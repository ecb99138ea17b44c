"""Signals for live scaling, read from real replicas: worker processes under real gRPC load, and
small real HTTP servers that answer garbage, time out, or report NaN and negative queues."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from gpupool_operator.adapters.runtimes import QueueSignal
from gpupool_operator.adapters.signals import Reading, Scraper, SignalBook, Target, model_signals, parse_reading
from gpupool_operator.core.demand import Shape, ShapeKind
from gpupool_operator.core.scaling import ScalingState, ShapeOffer, Targets, decide

from .conftest import MODEL, Load, Worker, free_port

WORKER_SIGNAL = QueueSignal("gpupool", "gpupool_worker_queue_depth", 0, model_label="model")
SHAPE = "A100-80GB MIG 1g.10gb"


def worker_target(w: Worker, pod: str = "ns/replica-0") -> Target:
    return Target(pod, f"ns/pool/{MODEL}", MODEL, w.metrics_url, WORKER_SIGNAL)


def sweep(scraper: Scraper, book: SignalBook, targets: list[Target]) -> dict[str, Reading]:
    return asyncio.run(_sweep(scraper, book, targets))


async def _sweep(scraper: Scraper, book: SignalBook, targets: list[Target]) -> dict[str, Reading]:
    try:
        return await scraper.sweep(book, targets)
    finally:
        await scraper.close()


def test_real_grpc_load_raises_the_queue_the_operator_reads(worker_factory: Callable[[], Worker]) -> None:
    w = worker_factory()
    book, scraper, target = SignalBook(), Scraper(timeout_s=2.0), worker_target(w)
    first = sweep(scraper, book, [target])[target.pod]
    assert first.error is None
    assert first.sample is not None
    assert first.sample.queue_depth[MODEL] == 0
    load = Load([w.url], concurrency=48).start()
    try:
        began = time.monotonic()
        deepest, deadline = 0.0, began + 90
        # bounded wait for the burst to queue, and for a rate window (1 s) to pass
        while (deepest < 8 or time.monotonic() - began < 1.5) and time.monotonic() < deadline:
            reading = sweep(scraper, book, [target])[target.pod]
            assert reading.error is None, reading.error
            assert reading.sample is not None
            deepest = max(deepest, reading.sample.queue_depth[MODEL])
            time.sleep(0.1)
        assert deepest >= 8, f"the queue never rose under 48 concurrent requests (deepest {deepest})"
        signals, served, silent = model_signals(book, MODEL, {target.pod: SHAPE}, {}, time.monotonic(), 10.0)
    finally:
        load.stop()
    assert not silent
    assert signals.reporting == 1
    assert signals.ready == 1
    assert signals.problem(10.0) is None
    assert signals.arrival_rate > 0
    assert signals.completion_rate > 0
    assert signals.queue + signals.in_flight > 0
    assert served is not None
    assert served.usd_per_million_inferences is not None
    assert served.usd_per_million_inferences > 0
    assert load.answered > 0
    assert not load.errors, load.errors
    # the load gone, the queue drains to zero and so does the arrival rate
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reading = sweep(scraper, book, [target])[target.pod]
        assert reading.sample is not None
        if reading.sample.queue_depth[MODEL] == 0 and reading.sample.inflight[MODEL] == 0:
            break
        time.sleep(0.2)
    for _ in range(2):  # two scrapes a rate window apart, both after the last answer
        time.sleep(1.1)
        sweep(scraper, book, [target])
    idle, _, _ = model_signals(book, MODEL, {target.pod: SHAPE}, {}, time.monotonic(), 10.0)
    assert idle.queue == 0
    assert idle.in_flight == 0
    assert idle.arrival_rate == 0


def test_a_dead_slow_or_dripping_replica_never_holds_up_the_others(
        worker_factory: Callable[[], Worker], bad_server: str) -> None:
    w = worker_factory()
    good = worker_target(w, "ns/good")
    dead = Target("ns/dead", "ns/pool/minilm", MODEL, f"http://127.0.0.1:{free_port()}/metrics", WORKER_SIGNAL)
    slow = Target("ns/slow", "ns/pool/minilm", MODEL, f"{bad_server}/slow", WORKER_SIGNAL)
    drip = Target("ns/drip", "ns/pool/minilm", MODEL, f"{bad_server}/drip", WORKER_SIGNAL)
    book = SignalBook()
    readings = sweep(Scraper(timeout_s=1.0), book, [slow, drip, dead, good])
    assert readings["ns/good"].error is None
    assert "no answer within 1 s" in (readings["ns/slow"].error or "")
    assert readings["ns/drip"].error is not None
    assert readings["ns/dead"].error is not None
    assert "Connect" in readings["ns/dead"].error
    # the good replica was read before the slow ones gave up: they ran side by side, not in turn
    assert readings["ns/good"].at < readings["ns/slow"].at
    assert readings["ns/good"].at < readings["ns/drip"].at
    # failing replicas wait out a back-off before the next attempt; the good one is due at once
    due = {t.pod for t in book.due([slow, drip, dead, good], readings["ns/dead"].at)}
    assert due == {"ns/good"}


@pytest.mark.parametrize(("path", "why"), [
    ("/html", "not Prometheus text"), ("/binary", "UTF-8"), ("/truncated", "not Prometheus text"),
    ("/nan", "nan"), ("/negative", "-4"), ("/inf", "inf"), ("/other-model", "no gpupool_worker_queue_depth"),
    ("/empty", "no gpupool_worker_queue_depth"), ("/error", "HTTP 500"), ("/huge", "bytes of metrics"),
])
def test_garbage_is_refused_and_never_scales_anything_down(bad_server: str, path: str, why: str) -> None:
    book = SignalBook()
    pod = "ns/replica-1"
    # two good samples of an idle replica (what would justify a scale-down) ...
    for at in (100.0, 102.0):
        sample = parse_reading(f'gpupool_worker_queue_depth{{model="{MODEL}"}} 0\n'
                               f'gpupool_worker_requests_total{{model="{MODEL}",outcome="success"}} 5\n',
                               WORKER_SIGNAL, MODEL, at)
        book.record(pod, Reading(at, sample), 1.0)
    # ... then the replica answers garbage
    scraper = Scraper(timeout_s=1.0, max_bytes=1 << 20, clock=lambda: 104.0)
    reading = sweep(scraper, book, [Target(pod, "ns/pool/minilm", MODEL, bad_server + path, WORKER_SIGNAL)])[pod]
    assert reading.sample is None
    assert why in (reading.error or ""), reading.error
    ready = {pod: SHAPE, "ns/replica-0": SHAPE}
    signals, _, silent = model_signals(book, MODEL, ready, {}, 104.0, 10.0)
    assert sorted(silent) == ["ns/replica-0", "ns/replica-1"]
    assert signals.reporting == 0
    assert signals.ready == 2
    offer = ShapeOffer(SHAPE, Shape(ShapeKind.MIG, "A100-80GB", profile="1g.10gb"), 10.0, 0.49, 8)
    targets = Targets(min_replicas=1, max_replicas=8, scale_down_window_s=0.0)
    idle = ScalingState(started_at=0.0, last_now=100.0, active_at=0.0, last_counts={SHAPE: 2})
    d = decide(idle, signals, targets, [offer], now=104.0)
    assert d.replicas == {SHAPE: 2}, d.reason  # held: the silent replicas' load is unknown
    assert d.held
    assert "reported" in d.reason


def test_external_runtimes_queue_metrics(bad_server: str) -> None:
    vllm = Target("ns/llm-0", "ns/pool/llm", "llm", f"{bad_server}/vllm",
                  QueueSignal("vllm", "vllm:num_requests_waiting", 0, model_label="model_name"))
    triton = Target("ns/ranker-0", "ns/pool/ranker", "ranker", f"{bad_server}/triton",
                    QueueSignal("triton", "nv_inference_pending_request_count", 0, model_label="model"))
    custom = Target("ns/c-0", "ns/pool/c", "c", f"{bad_server}/custom", QueueSignal("custom", "my_backlog", 0))
    unset = Target("ns/u-0", "ns/pool/u", "u", f"{bad_server}/custom", QueueSignal("custom", None, 0))
    readings = sweep(Scraper(), SignalBook(), [vllm, triton, custom, unset])
    v = readings["ns/llm-0"].sample
    assert v is not None
    assert v.queue_depth == {"llm": 12.0}
    assert v.inflight == {"llm": 8.0}
    assert v.completions == {"llm": 340.0}
    t = readings["ns/ranker-0"].sample
    assert t is not None
    assert t.queue_depth == {"ranker": 5.0}
    assert t.completions == {"ranker": 100.0}
    assert t.inferences == {"ranker": 400.0}
    c = readings["ns/c-0"].sample
    assert c is not None
    assert c.queue_depth == {"c": 3.0}
    assert readings["ns/u-0"].sample is None
    assert "no queue metric" in (readings["ns/u-0"].error or "")


def test_counters_that_restart_give_no_negative_rate_and_old_samples_are_stale() -> None:
    book = SignalBook()

    def text(done: int, queue: int) -> str:
        return (f'gpupool_worker_queue_depth{{model="m"}} {queue}\n'
                f'gpupool_worker_requests_total{{model="m",outcome="success"}} {done}\n')

    book.record("ns/p", Reading(10.0, parse_reading(text(500, 3), WORKER_SIGNAL, "m", 10.0)), 1.0)
    book.record("ns/p", Reading(12.0, parse_reading(text(4, 1), WORKER_SIGNAL, "m", 12.0)), 1.0)  # restarted
    signals, _, silent = model_signals(book, "m", {"ns/p": SHAPE}, {SHAPE: 1}, 12.5, 10.0)
    assert not silent
    assert signals.arrival_rate >= 0
    assert signals.completion_rate == 0
    assert signals.replicas[SHAPE].ready == 1
    assert signals.replicas[SHAPE].pending == 1
    assert signals.age_s == pytest.approx(0.5)
    stale, _, silent = model_signals(book, "m", {"ns/p": SHAPE}, {}, 40.0, 10.0)
    assert silent == ["ns/p"]
    assert stale.reporting == 0
    assert stale.problem(10.0) is not None


def test_pods_that_never_answered_are_probed_a_bounded_number_at_a_time() -> None:
    """Thousands of replicas that serve nothing (KWOK's) never crowd out the ones that answer."""
    book = SignalBook(probe_limit=64)
    silent = [Target(f"ns/kwok-{i}", "ns/pool/m", "m", "http://10.255.255.1:8002/metrics", WORKER_SIGNAL)
              for i in range(1000)]
    good = Target("ns/good", "ns/pool/m", "m", "http://127.0.0.1:1/metrics", WORKER_SIGNAL)
    book.record("ns/good", Reading(0.0, parse_reading('gpupool_worker_queue_depth{model="m"} 0\n',
                                                      WORKER_SIGNAL, "m", 0.0)), 1.0)
    first = book.due([*silent, good], 1.0)
    assert good in first
    assert len(first) == 65
    for t in first:
        if t is not good:
            book.record(t.pod, Reading(1.0, None, "no answer"), 1.0)
    second = book.due([*silent, good], 1.5)
    assert good in second
    assert len(second) == 65
    assert not {t.pod for t in first} & {t.pod for t in second if t is not good}  # the next 64, not the same
    # failures of a pod that never answered back off towards 120 s; one that did, towards 8 s
    for _ in range(10):
        book.record("ns/kwok-0", Reading(100.0, None, "no answer"), 1.0)
        book.record("ns/good", Reading(100.0, None, "no answer"), 1.0)
    assert book.replicas["ns/kwok-0"].retry_at == 100.0 + 120.0
    assert book.replicas["ns/good"].retry_at == 100.0 + 8.0
