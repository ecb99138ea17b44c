"""The policy's state survives an operator restart: written relative to the moment of writing,
read back onto another clock, it decides exactly as if nothing had happened (pure core)."""

from __future__ import annotations

import json

import pytest

from gpupool_operator.core.demand import Shape, ShapeKind
from gpupool_operator.core.scaling import ScalingState, ShapeOffer, ShapeReplicas, Signals, Targets, decide

OFFER = ShapeOffer("1x A100-80GB", Shape(ShapeKind.GPU, "A100-80GB", gpus=1), 20.0, 3.43, 8, 1.0)
TARGETS = Targets(min_replicas=1, max_replicas=8, scale_down_window_s=30.0)


def signals(rate: float, ready: int) -> Signals:
    return Signals(age_s=0.5, queue=rate, in_flight=min(rate, 8.0), arrival_rate=rate,
                   replicas={OFFER.key: ShapeReplicas(ready=ready)})


def run(rates: list[float], restart_at: int | None, new_clock: float, gap: float) -> list[tuple[int, str]]:
    """Decisions every 2 s on clock ``t``; at ``restart_at`` the state goes through status (JSON,
    times relative to the write) and continues on a clock ``new_clock`` seconds ahead, ``gap``
    seconds later (the next tick after the restart)."""
    state, ready, t, offset, out = ScalingState(), 1, 1000.0, 0.0, []
    for i, rate in enumerate(rates):
        if i == restart_at:
            stored = json.dumps(state.shifted(-(t - 2.0 + offset)).to_dict())  # written at the last tick
            offset = new_clock
            state = ScalingState.from_dict(json.loads(stored)).shifted(t + offset - 2.0)
        d = decide(state, signals(rate, ready), TARGETS, [OFFER], now=t + offset)
        state, ready = d.state, d.total
        out.append((d.total, d.reason.split(":")[0]))
        t += 2.0
    return out


@pytest.mark.parametrize("new_clock", [-990.0, 0.0, 5e6])  # a new process's monotonic clock: anything
def test_a_restart_mid_burst_changes_no_decision(new_clock: float) -> None:
    burst = [2.0] * 20 + [120.0] * 10 + [3.0] * 40
    straight = run(burst, None, 0.0, 2.0)
    for restart in (25, 33, 45):  # in the burst, just after it (panic), and in the scale-down window
        assert run(burst, restart, new_clock, 2.0) == straight
    assert max(n for n, _ in straight) > 1
    assert straight[-1][0] < max(n for n, _ in straight)  # it does scale down, after the window


def test_without_the_stored_state_a_restart_forgets_the_burst() -> None:
    """What the status buys: a fresh state would warm up again and hold, or drop the window."""
    burst = [2.0] * 20 + [120.0] * 10 + [3.0] * 40
    straight = run(burst, None, 0.0, 2.0)
    state, ready, out = ScalingState(), straight[32][0], []
    for i, rate in enumerate(burst[33:]):
        d = decide(state, signals(rate, ready), TARGETS, [OFFER], now=5000.0 + 2 * i)
        state, ready = d.state, d.total
        out.append((d.total, d.reason.split(":")[0]))
    assert out != straight[33:]


def test_shifted_moves_every_time_and_no_duration() -> None:
    s = ScalingState(samples=((10.0, 1.0),), down_envelope=((11.0, 2.0),), up_envelope=((12.0, 3.0),),
                     panic_until=13.0, high_water=4.0, high_water_at=14.0, started_at=1.0, last_now=15.0,
                     pending_since=16.0, active_at=17.0, startup_s=30.0, last_counts={"a": 2})
    t = s.shifted(100.0)
    assert t.samples == ((110.0, 1.0),)
    assert t.down_envelope == ((111.0, 2.0),)
    assert t.up_envelope == ((112.0, 3.0),)
    assert (t.panic_until, t.high_water_at, t.started_at, t.last_now, t.pending_since, t.active_at) == (
        113.0, 114.0, 101.0, 115.0, 116.0, 117.0)
    assert t.startup_s == 30.0
    assert t.high_water == 4.0
    assert t.last_counts == {"a": 2}
    assert t.shifted(-100.0) == s
