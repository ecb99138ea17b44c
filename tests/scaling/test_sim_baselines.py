"""The baselines' control laws on hand-made observations, and the oracle on a hand-made trace."""

from __future__ import annotations

import math

import pytest
from scaling_builders import gpu_offers, targets

from gpupool_operator.core.scaling import DEFAULT_PARAMS
from gpupool_operator.sim.baselines import Hpa, Keda, Kpa, Wva, static_peak
from gpupool_operator.sim.model import Observation, SimConfig, Simulation
from gpupool_operator.sim.oracle import Oracle, need_per_bin
from gpupool_operator.sim.scenario import Scenario
from gpupool_operator.sim.trace import Trace


def scenario(**kw: object) -> Scenario:
    t = targets(**kw)
    cfg = SimConfig(pod_start_s=30.0, max_batch=t.max_batch_size, objective_s=t.objective_s,
                    max_replicas=t.max_replicas)
    return Scenario("ns/pool/m", t, tuple(gpu_offers()), (), DEFAULT_PARAMS, cfg)


def obs(now: float, ready: int, pending: int = 0, util: float | None = None, conc: float = 0.0, queue: int = 0,
        key: str = "a100", peak: int | None = None, **extra: int) -> Observation:
    return Observation(now=now, interval=2.0, queue=queue, in_flight=0, arrivals=extra.get("arrivals", 0),
                       completions=0, concurrency=conc, utilization=util,
                       queue_peak=queue if peak is None else peak, ready={key: ready} if ready else {},
                       pending={key: pending} if pending else {})


EMPTY = Trace("none", (0.0,), (1.0,))


def test_the_baselines_scale_the_cheapest_shape_per_request_per_second() -> None:
    # $0.343 per req/s against the H100's 0.344; the 3g slice cannot meet the 2 s objective at all
    assert scenario().baseline_shape().key == "a100"
    assert [o.key for o in scenario().usable()] == ["a100", "h100"]


def test_hpa_tolerance_rate_limit_and_scale_down_window() -> None:
    hpa = Hpa(scenario(), EMPTY)
    assert hpa.decide(obs(15, 2, util=0.75)) == {"a100": 2}  # 0.75 / 0.7 = 1.07: within the 0.1 band
    assert hpa.decide(obs(30, 2, util=1.0)) == {"a100": 3}  # ceil(2 x 1.43)
    assert hpa.decide(obs(45, 1, util=7.0)) == {"a100": 5}  # wants 10: at most max(+4, x2) per period
    assert hpa.decide(obs(60, 5, util=0.1)) == {"a100": 5}  # the 300 s window holds the highest
    assert hpa.decide(obs(400, 5, util=0.1)) == {"a100": 1}  # ... until it has passed


def test_keda_activates_from_zero_at_its_poll_and_returns_to_zero_after_the_cooldown() -> None:
    keda = Keda(scenario(min_replicas=0, scale_to_zero=True), EMPTY)
    assert keda.initial() == {}
    assert keda.decide(obs(15, 0, queue=3)) == {"a100": 1}  # first poll
    assert keda.decide(obs(30, 1, queue=40)) == {"a100": 5}  # HPA on queue/target: ceil(40 / 8)
    assert keda.decide(obs(45, 5, queue=0)) == {"a100": 5}  # scale-down window
    assert keda.decide(obs(346, 5, queue=0)) == {}  # 300 s without activity: to zero
    no_zero = Keda(scenario(), EMPTY)
    assert no_zero.decide(obs(400, 1, queue=0)) == {"a100": 1}


def test_knative_kpa_panics_and_never_scales_down_in_panic() -> None:
    kpa = Kpa.knative(scenario(), EMPTY)
    target = 0.7 * 8  # 5.6 concurrent requests per pod
    d = kpa.decide(obs(2, 1, conc=30.0))
    assert d == {"a100": math.ceil(30.0 / target)}
    assert kpa.panic_time == 2
    assert kpa.decide(obs(4, 6, conc=0.0)) == {"a100": 6}  # in panic: no scale-down
    # stable window (60 s) after the last panic tick, panic ends; the stable average decides
    for now in range(6, 70, 2):
        out = kpa.decide(obs(now, 6, conc=0.0))
    assert out == {"a100": 3}  # max-scale-down-rate 2: at most halve per decision


def test_aibrix_kpa_grows_at_most_twofold_per_decision() -> None:
    kpa = Kpa.aibrix(scenario(), EMPTY)
    assert kpa.interval_s == 10.0
    assert kpa.decide(obs(10, 2, conc=100.0)) == {"a100": 4}


def test_wva_adds_the_cheapest_variant_and_removes_the_dearest() -> None:
    wva = Wva(scenario(), EMPTY)
    assert wva.initial() == {"a100": 1}  # the cheapest per replica of the shapes that meet the objective
    assert wva.decide(obs(60, 1, queue=4)) == {"a100": 2}  # spare 5 - 4 = 1 < 3
    assert wva.decide(obs(120, 1, pending=1, queue=4)) == {"a100": 2}  # a replica pending: no more
    both = Observation(180, 60, 0, 0, 0, 0, 0.0, 0.5, 0, {"a100": 2, "h100": 1}, {})
    assert wva.decide(both) == {"a100": 2}  # idle: the dearest (h100) goes


def test_static_provisions_for_the_peak() -> None:
    # 40 requests in 1 s: the worst window is one bin of 1 s ... the oracle's need over any window
    # (work / (w + objective / 2) / 0.8); on 10 req/s A100s.
    burst = Trace("burst", tuple(10.0 + i / 40 for i in range(40)), tuple([1.0] * 40))
    need = max(need_per_bin(burst, 2.0))
    policy = static_peak(scenario(), burst)
    assert policy.initial() == {"a100": math.ceil(need / 10.0)}


def test_the_oracle_starts_replicas_one_pod_start_before_a_burst() -> None:
    # 60 req/s for 10 s at t=100 s: needs several A100s from t=100; with a 30 s start they are
    # asked for around t=70, and released after the burst. One replica (min) otherwise.
    times = (*tuple(100.0 + i / 60 for i in range(600)), 400.0)
    burst = Trace("burst", times, tuple([1.0] * len(times)))
    sc = scenario()
    oracle = Oracle(sc, burst)
    sim = Simulation(burst, sc.shape_models(), sc.config, oracle)
    r = sim.run()
    assert r.within_objective == pytest.approx(1.0)
    created = [t for t, delta, _ in oracle.changes if delta > 0 and t > 0]
    assert created
    assert min(created) == pytest.approx(100.0 - 30.0 - 0.5)
    at_300 = sum(v[60] for v in r.timeline.replicas.values())  # the sample at t=300 s
    assert at_300 == 1
