"""Properties of the scaling policy over random states, signals, targets and shapes (hypothesis).

* monotone in load: more arrivals (or more queue) never lower the capacity the policy aims for,
  and the mix it asks for covers that target unless a bound, room or the budget says otherwise;
* never below minReplicas nor above maxReplicas;
* no scale-down on stale, partial or missing data;
* never over budget (beyond what minReplicas alone cost).
"""

from __future__ import annotations

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scaling_builders import A100, CPU8, H100, MIG3G, offer, signals

from gpupool_operator.core.scaling import ScalingState, ShapeOffer, Targets, decide

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = ("a100", "h100", "mig3g", "cpu")


@st.composite
def offer_sets(draw: st.DrawFn) -> list[ShapeOffer]:
    shapes = {"a100": A100, "h100": H100, "mig3g": MIG3G, "cpu": CPU8}
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=4, unique=True))
    return [offer(k, shapes[k], draw(st.floats(0.5, 40.0)), draw(st.floats(0.1, 10.0)), draw(st.integers(1, 20)))
            for k in sorted(keys)]


@st.composite
def target_sets(draw: st.DrawFn) -> Targets:
    zero = draw(st.booleans())
    lo = draw(st.integers(0 if zero else 1, 4))
    return Targets(min_replicas=lo, max_replicas=draw(st.integers(max(1, lo), 16)),
                   target_queue_depth=draw(st.integers(1, 16)),
                   objective_s=draw(st.one_of(st.none(), st.floats(0.5, 30.0))),
                   max_batch_size=draw(st.integers(1, 32)), scale_down_window_s=draw(st.sampled_from([0.0, 60.0])),
                   scale_to_zero=zero, scale_to_zero_after_s=draw(st.sampled_from([0.0, 60.0])),
                   budget_usd_per_hour=draw(st.one_of(st.none(), st.floats(1.0, 50.0)))).validate()


@st.composite
def situations(draw: st.DrawFn) -> tuple[ScalingState, list[ShapeOffer], Targets, dict[str, tuple[int, int]], float]:
    offers = draw(offer_sets())
    t = draw(target_sets())
    current = {o.key: (draw(st.integers(0, 4)), draw(st.integers(0, 1))) for o in offers}
    total = sum(a + b for a, b in current.values())
    if not t.min_replicas <= total <= t.max_replicas:
        current = {offers[0].key: (max(t.min_replicas, 1), 0)}
    # a history: a few decisions at random loads
    state = ScalingState()
    now = 0.0
    for rate in draw(st.lists(st.floats(0.0, 100.0), max_size=6)):
        now += 2.0
        state = decide(state, signals(rate, current), t, offers, now).state
    return state, offers, t, current, now + 2.0


@SETTINGS
@given(situations(), st.floats(0.0, 200.0), st.floats(0.0, 200.0), st.floats(0.0, 200.0))
def test_more_load_never_aims_lower(sit: tuple, rate: float, more: float, queue: float) -> None:
    state, offers, t, current, now = sit
    low = decide(state, signals(rate, current, queue=queue), t, offers, now)
    high = decide(state, signals(rate + more, current, queue=queue), t, offers, now)
    deeper = decide(state, signals(rate, current, queue=queue + more), t, offers, now)
    assert high.target >= low.target - 1e-9
    assert deeper.target >= low.target - 1e-9
    for d in (low, high, deeper):
        bound = d.total == t.max_replicas or d.budget_capped
        room = all(d.replicas.get(o.key, 0) >= o.room for o in offers)
        if not (d.held or bound or room or "short" in d.reason or "limited" in d.reason):
            event("the mix covers the target")
            assert d.capacity >= d.target - 1e-6, d.reason


@SETTINGS
@given(situations(), st.floats(0.0, 500.0), st.floats(0.0, 500.0), st.floats(0.0, 60.0))
def test_never_below_min_or_above_max(sit: tuple, rate: float, queue: float, age: float) -> None:
    state, offers, t, current, now = sit
    d = decide(state, signals(rate, current, queue=queue, age=age), t, offers, now)
    assert t.min_replicas <= d.total <= t.max_replicas, d.reason
    assert all(n > 0 for n in d.replicas.values())


@SETTINGS
@given(situations(), st.floats(0.0, 500.0), st.floats(10.01, 1e6), st.booleans())
def test_stale_partial_or_missing_data_never_scales_down(sit: tuple, rate: float, age: float, partial: bool) -> None:
    state, offers, t, current, now = sit
    ready = sum(r for r, _ in current.values())
    sig = signals(rate, current, reporting=ready - 1) if partial and ready else signals(rate, current, age=age)
    d = decide(state, sig, t, offers, now)
    assert d.held
    for key, (r, p) in current.items():
        assert d.replicas.get(key, 0) >= r + p, d.reason
    blind = decide(state, None, t, offers, now)  # no sample at all: what was last asked for stays
    assert blind.held
    for key, n in state.last_counts.items():
        assert blind.replicas.get(key, 0) >= min(n, t.max_replicas) or blind.total == t.max_replicas, blind.reason


@SETTINGS
@given(situations(), st.floats(0.0, 500.0), st.floats(0.0, 500.0))
def test_never_over_budget_beyond_min_replicas(sit: tuple, rate: float, queue: float) -> None:
    state, offers, t, current, now = sit
    d = decide(state, signals(rate, current, queue=queue), t, offers, now)
    if t.budget_usd_per_hour is None or d.held:
        return
    prices = {o.key: o.usd_per_hour for o in offers}
    cost = sum(prices[k] * n for k, n in d.replicas.items())
    current_cost = sum(prices[k] * (r + p) for k, (r, p) in current.items())
    assert cost <= max(t.budget_usd_per_hour, current_cost) + 1e-6 or d.total == t.min_replicas, d.reason
    if current_cost <= t.budget_usd_per_hour:
        assert cost <= t.budget_usd_per_hour + 1e-6 or d.total == t.min_replicas, d.reason
