"""The discrete-event model on traces small enough to check by hand."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest

from gpupool_operator.sim.model import Observation, ShapeModel, SimConfig, Simulation
from gpupool_operator.sim.trace import Trace


class Scripted:
    """A policy that asks for fixed replica counts from given times on."""

    name = "scripted"

    def __init__(self, start: Mapping[str, int], plan: list[tuple[float, dict[str, int]]], interval: float = 1.0):
        self.start, self.plan, self.interval_s = dict(start), plan, interval
        self.seen: list[Observation] = []

    def initial(self) -> Mapping[str, int]:
        return self.start

    def decide(self, obs: Observation) -> Mapping[str, int]:
        self.seen.append(obs)
        want = self.start
        for at, counts in self.plan:
            if obs.now >= at:
                want = counts
        return want


def trace(times: list[float], work: list[float] | None = None) -> Trace:
    return Trace("hand", tuple(times), tuple(work or [1.0] * len(times)))


SLOW = {"s": ShapeModel("s", throughput=2.0, usd_per_hour=3.6)}  # batch 1: 0.5 s per request


def test_one_replica_serves_a_queue_in_order() -> None:
    # Batch size 1 at 2 req/s: each request takes (1/2)(0.5 + 0.5) = 0.5 s. Three at t=0 finish at
    # 0.5, 1.0 and 1.5; a fourth at t=10 finishes at 10.5. Objective 1 s: 3 of 4 within.
    cfg = SimConfig(max_batch=1, objective_s=1.0, max_replicas=1)
    sim = Simulation(trace([0.0, 0.0, 0.0, 10.0]), SLOW, cfg, Scripted({"s": 1}, []))
    r = sim.run()
    assert sim.finish == [0.5, 1.0, 1.5, 10.5]
    assert r.within_objective == pytest.approx(0.75)
    assert r.p50_s == pytest.approx(0.5)
    assert r.p99_s == pytest.approx(1.5)
    # $3.60/h for the 10 s the trace spans: $0.01; one replica, no GPU share.
    assert r.usd == pytest.approx(0.01)
    assert r.usd_per_million == pytest.approx(0.01 / 4 * 1e6)
    assert r.scale_events == 0
    assert r.cold_starts == 0


def test_a_batch_takes_what_is_queued_up_to_the_batch_size() -> None:
    # T=8 req/s at batch 4: a full batch takes 0.5 s, a batch of 1 takes 0.5 x (0.5 + 0.5 x 1/4)
    # = 0.3125 s. Six arrive at t=0, one after the other: the first finds the replica idle and runs
    # at once (as the worker does), the next four form a full batch when it is done (0.3125 + 0.5),
    # the last runs alone after them (0.8125 + 0.3125).
    shapes = {"f": ShapeModel("f", throughput=8.0, usd_per_hour=1.0)}
    sim = Simulation(trace([0.0] * 6), shapes, SimConfig(max_batch=4, objective_s=1.0, max_replicas=1),
                     Scripted({"f": 1}, []))
    sim.run()
    assert sim.finish == [0.3125, 0.8125, 0.8125, 0.8125, 0.8125, 1.125]


def test_work_stretches_the_batch() -> None:
    # The same replica, one request of work 3 (three average requests): 0.5 x (0.5 + 0.5 x 3/4).
    shapes = {"f": ShapeModel("f", throughput=8.0, usd_per_hour=1.0)}
    sim = Simulation(trace([0.0], [3.0]), shapes, SimConfig(max_batch=4, objective_s=1.0, max_replicas=1),
                     Scripted({"f": 1}, []))
    sim.run()
    assert sim.finish == [pytest.approx(0.4375)]


def test_requests_at_zero_replicas_wait_for_a_cold_start() -> None:
    # No replica at first; the policy asks for one at its first tick (t=1); it serves 30 s later
    # (t=31). Two requests at t=0.5 and t=2 wait for it: one cold start, two cold-start requests,
    # finished at 31.5 and 32.0. Billing starts when the replica is asked for: 1 s to 40 s.
    sim = Simulation(trace([0.5, 2.0, 40.0]), SLOW, SimConfig(pod_start_s=30.0, max_batch=1, objective_s=1.0,
                                                                max_replicas=1),
                     Scripted({}, [(1.0, {"s": 1})]))
    r = sim.run()
    assert sim.finish == [31.5, 32.0, 40.5]
    assert r.cold_starts == 1
    assert r.cold_requests == 2
    assert r.usd == pytest.approx(3.6 * 39 / 3600)
    assert r.scale_ups == 1
    assert r.within_objective == pytest.approx(1 / 3)


def test_scale_down_drains_a_busy_replica_and_prefers_idle_ones() -> None:
    # Two replicas; at t=0 one request takes replica 1 until 0.5 s. At t=0.2 the policy wants one:
    # the idle replica goes at once, the busy one finishes its request.
    sim = Simulation(trace([0.0, 0.3]), SLOW, SimConfig(max_batch=1, objective_s=2.0, max_replicas=2),
                     Scripted({"s": 2}, [(0.2, {"s": 1})], interval=0.2))
    r = sim.run()
    assert sim.finish == [0.5, 1.0]  # the second request waits for the one replica left
    assert r.scale_downs == 1


def test_unserved_requests_count_as_misses_with_infinite_latency() -> None:
    # Nobody ever serves: every request misses; the run stops after the drain limit.
    sim = Simulation(trace([0.0, 1.0]), SLOW, SimConfig(max_batch=1, objective_s=1.0, drain_limit_s=20.0),
                     Scripted({}, []))
    r = sim.run()
    assert r.within_objective == 0.0
    assert r.served == 0
    assert math.isinf(r.p99_s)
    assert r.cold_starts == 1
    assert r.cold_requests == 2


def test_observations_report_rates_queue_and_utilization() -> None:
    # One replica busy 0.5 s of every second (a request each second): the tick at t=4 sees the
    # 4 arrivals since t=0 (the first tick looks back one interval), utilization ~0.5.
    policy = Scripted({"s": 1}, [], interval=4.0)
    Simulation(trace([0.0, 1.0, 2.0, 3.0, 4.5]), SLOW, SimConfig(max_batch=1, objective_s=1.0), policy).run()
    first = policy.seen[0]
    assert first.now == 4.0
    assert first.interval == 4.0
    assert first.arrivals == 4
    assert first.completions == 4
    assert first.utilization == pytest.approx(0.5)
    assert first.ready == {"s": 1}
    assert first.queue == 0


def test_mig_relayout_delays_a_new_slice() -> None:
    class Relayout:
        def place(self, counts: Mapping[str, int]) -> tuple[dict[str, int], int]:
            return dict(counts), 1  # fits, but needs one MIG layout change

    shapes = {"m": ShapeModel("m", throughput=2.0, usd_per_hour=1.0, mig=True)}
    sim = Simulation(trace([0.5]), shapes, SimConfig(pod_start_s=10.0, mig_relayout_s=60.0, max_batch=1,
                                                     objective_s=1.0),
                     Scripted({}, [(0.0, {"m": 1})], interval=0.25), placer=Relayout())
    sim.run()
    assert sim.finish == [pytest.approx(70.75)]  # asked at 0.25, serves at 0.25 + 10 + 60, 0.5 s of work


def test_a_shape_batches_no_more_than_its_objective_allows() -> None:
    # batch_limit 1: four requests at t=0 run one at a time on one replica, 0.5 s each.
    shapes = {"c": ShapeModel("c", throughput=2.0, usd_per_hour=1.0, fixed_fraction=0.05, batch_limit=1)}
    sim = Simulation(trace([0.0] * 4), shapes, SimConfig(max_batch=8, objective_s=5.0, max_replicas=1),
                     Scripted({"c": 1}, []))
    sim.run()
    # t(1) = (8 / 2) x (0.05 + 0.95 / 8) = 0.675 s per request
    assert sim.finish == pytest.approx([0.675, 1.35, 2.025, 2.7])
