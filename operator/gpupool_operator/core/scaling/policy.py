"""gpupool's scaling policy: one model's replicas per shape from a sample of its queue and rates.

:func:`decide` is a pure function of (state, signals, targets, offers, now): the operator calls it
every tick with what it scraped, ``gpupool simulate`` with what its model measured, and tests with
numbers they wrote. Each call returns a :class:`Decision` (replicas per shape, why, and the next
state). One decision, top to bottom:

1. **Refuse to guess.** No sample, a stale or partial one, or a clock that went backwards: hold
   the current replicas (bounds still apply), so missing data never scales anything down.
2. **Demand.** Arrival rates averaged over the stable window (60 s) and the panic window (6 s),
   plus the queue above ``targetQueueDepth`` per replica, drained over ``drain_s`` (30 s) unless
   the replicas running and starting drain it sooner than a new one could start, divided by the
   target utilization (0.7) of each shape's throughput *within the objective*
   (:func:`~gpupool_operator.core.scaling.offers.capacity_within`: a slice that cannot meet the
   objective contributes nothing and is never chosen).
3. **Panic.** When short-window demand reaches ``panic_threshold`` (2x) of ready capacity, scale
   to it at once and do not scale down for a stable window. The high-water mark of short-window
   demand is kept and decays with a half-life of max(60 s, 4 replica start-ups as observed):
   capacity stays near the last bursts' level while they recur, and steps down once they stop,
   instead of sticking at the peak; the slower new capacity arrives, the longer it is held.
4. **Hold while a scale-up is pending**: no new decision until the replicas asked for are ready,
   except a top-up when arrival rates alone (not the queue, which the pending replicas will
   drain) need more than the capacity already coming (``pending_topup``; off: hold outright).
5. **Damp.** A tolerance band (10 %), the pool's stabilization windows (scale down only to the
   highest recommendation of the scale-down window, up only to the lowest of the scale-up
   window), no scale-down in the first stable window after a start without history, rate limits
   (x10 or +4 up, /2 down per decision), and min/max replicas; a model with ``scaleToZero`` and
   ``minReplicas: 0`` loses its last replica after ``scaleToZeroAfter`` without load.
6. **Compose** (:mod:`~gpupool_operator.core.scaling.compose`): added capacity goes to the cheapest
   mix of shapes with room that covers the gap; removal keeps the cheapest subset of running
   replicas that covers the target (the most expensive capacity per unit of throughput goes
   first); when a different mix would save 20 % (say a CPU replica instead of an idle GPU slice),
   its replicas are added first and the dearer ones go once they are ready; at max replicas,
   small replicas are traded for larger ones when that is the only way to reach the target.
7. **Budget.** Never plan above the budget: additions are dropped dearest first, and the reason
   says so; the budget never removes ``minReplicas``.

Without any ``inferencesPerSecond`` in the pool, replicas are sized by queue depth alone (each
replica is worth ``targetQueueDepth`` requests queued or in flight), as KEDA would.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gpupool_operator.core.scaling.compose import (
    EPS,
    Option,
    add_counts,
    cheapest_cover,
    mix_capacity,
    mix_cost,
    trim_to_budget,
)
from gpupool_operator.core.scaling.offers import ShapeOffer, capacity_within
from gpupool_operator.core.scaling.params import DEFAULT_PARAMS, PolicyParams
from gpupool_operator.core.scaling.signals import Signals
from gpupool_operator.core.scaling.state import ScalingState
from gpupool_operator.core.scaling.targets import Targets

__all__ = ["Decision", "decide"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to converge to: replicas per shape key (ready and pending together)."""

    replicas: dict[str, int]
    reason: str
    state: ScalingState
    capacity: float = 0.0  # what the mix serves within the objective (requests/s)
    demand: float = 0.0  # the stable demand estimate behind it (requests/s)
    target: float = 0.0  # the capacity the policy aimed for, before bounds, room and budget
    usd_per_hour: float = 0.0
    panic: bool = False
    budget_capped: bool = False
    held: bool = False  # no new decision (stale data, pending scale-up, ...): bounds only

    @property
    def total(self) -> int:
        return sum(self.replicas.values())

    def changes(self, current: Mapping[str, int]) -> dict[str, int]:
        """Replicas to add (positive) or remove (negative) per shape, relative to ``current``."""
        keys = sorted(set(current) | set(self.replicas))
        return {k: self.replicas.get(k, 0) - current.get(k, 0) for k in keys
                if self.replicas.get(k, 0) != current.get(k, 0)}


class _Book:
    """Per-shape capacity within the objective, prices and room, as the compose step needs them."""

    def __init__(self, offers: Sequence[ShapeOffer], targets: Targets, params: PolicyParams) -> None:
        self.offers = {o.key: o for o in offers}
        caps = {o.key: capacity_within(o, targets.max_batch_size, targets.objective_s,
                                       params.fixed_fraction(o.shape.kind)) for o in offers}
        #: Without any throughput figure, replicas are sized by queue depth: one unit each.
        self.queue_mode = bool(offers) and all(o.throughput is None for o in offers)
        self.capacity = {k: (1.0 if self.queue_mode else c) for k, (c, _) in caps.items()}
        self.excluded = tuple(why for c, why in caps.values() if why and not self.queue_mode)
        self.price = {o.key: o.usd_per_hour for o in offers}
        self.dearest = max(self.price.values(), default=0.0) + 1.0

    def of(self, counts: Mapping[str, int]) -> tuple[float, float]:
        return mix_capacity(counts, self.capacity), mix_cost(counts, self.price)

    def _option(self, key: str, limit: int) -> Option:
        # a shape no longer offered keeps no capacity and is the first to go
        return Option(key, self.capacity.get(key, 0.0), self.price.get(key, self.dearest), limit)

    def adding(self, current: Mapping[str, int]) -> list[Option]:
        return [self._option(k, max(0, o.room - current.get(k, 0))) for k, o in self.offers.items()
                if self.capacity[k] > 0]

    def keeping(self, current: Mapping[str, int]) -> list[Option]:
        return [self._option(k, n) for k, n in current.items() if n > 0]

    def anything(self) -> list[Option]:
        return [self._option(k, o.room) for k, o in self.offers.items() if self.capacity[k] > 0]


def decide(state: ScalingState, signals: Signals | None, targets: Targets, offers: Sequence[ShapeOffer],
           now: float, params: PolicyParams = DEFAULT_PARAMS) -> Decision:
    """The replicas per shape one model should converge to now. A purely computational function
    with no side-effects: time comes in as ``now`` (seconds on any steady clock)."""
    book = _Book(offers, targets, params)
    current = signals.counts() if signals is not None else {k: n for k, n in state.last_counts.items() if n}
    if state.last_now is not None and now < state.last_now - 1e-6:
        state = state.reset(now)
        return _hold(book, state, current, targets, now, "the clock went back; window history dropped")
    if state.started_at is None:
        state = dataclasses.replace(state, started_at=now, active_at=now)
    problem = "no metrics sample" if signals is None else signals.problem(params.stale_after_s)
    if problem is not None or signals is None:
        return _hold(book, state, current, targets, now, problem or "no metrics sample")

    # 2. demand, and 3. panic
    if signals.pending == 0 and state.pending_since is not None:  # the last scale-up is serving: learn its start-up
        took = now - state.pending_since
        state = dataclasses.replace(state, startup_s=took if state.startup_s is None else (state.startup_s + took) / 2)
    cur_cap, _ = book.of(current)
    ready_cap = sum(r.ready * book.capacity.get(k, 0.0) for k, r in signals.replicas.items())
    util = 1.0 if book.queue_mode else params.target_utilization
    if book.queue_mode:
        sample, drain = (signals.queue + signals.in_flight) / targets.target_queue_depth, 0.0
    else:
        sample = signals.arrival_rate
        excess = max(0.0, signals.queue - targets.target_queue_depth * max(1, signals.ready))
        drain = excess / params.drain_s
    active = signals.arrival_rate > 0 or signals.queue > 0 or signals.in_flight > 0
    state = state.with_sample(now, sample, params.stable_window_s)
    startup = state.startup_s if state.startup_s is not None else params.startup_guess_s
    if signals.pending and state.pending_since is not None:  # still starting: it takes at least this long
        startup = max(startup, now - state.pending_since)
    spare = cur_cap - state.mean_rate(now, params.panic_window_s)
    if drain > 0 and spare > 0 and (drain * params.drain_s) / spare <= startup:
        drain = 0.0  # the replicas running and starting drain this queue before a new one could start
    if active:
        state = dataclasses.replace(state, active_at=now)
    stable = state.mean_rate(now, params.stable_window_s) + drain
    short = state.mean_rate(now, params.panic_window_s) + drain
    if short > EPS and short >= params.panic_threshold * ready_cap:
        state = dataclasses.replace(state, panic_until=now + params.stable_window_s)
    panic = state.panic_until is not None and now < state.panic_until
    half_life = max(params.panic_decay_half_life_s, params.hold_startups * startup)
    held = state.high_water_now(now, half_life)
    if short / util >= held:  # the high-water mark of short-window demand, decaying between bursts
        state = dataclasses.replace(state, high_water=short / util, high_water_at=now)

    # 4. no new decision while the last scale-up is pending, except a top-up for arrival rates
    #    beyond the capacity already coming (the queue, which pending replicas do not yet serve,
    #    is not counted again: that is what cascades)
    notes: list[str] = []
    pending, rates = False, 0.0
    if signals.pending == 0:
        state = dataclasses.replace(state, pending_since=None)
    elif state.pending_since is not None and now - state.pending_since < params.pending_timeout_s:
        pending = True
        rates = max(state.mean_rate(now, params.stable_window_s), state.mean_rate(now, params.panic_window_s))
        if not params.pending_topup or rates / util <= cur_cap + EPS:
            why = f"waiting for {signals.pending} pending replica(s) asked {now - state.pending_since:.0f} s ago"
            return _hold(book, state, current, targets, now, why, panic=panic, demand=stable)
        notes.append(f"topping up the {signals.pending} pending replica(s): arrivals alone need more")

    # 5. damp
    target = max(rates / util, held, cur_cap) if pending else max(stable / util, state.high_water_now(now, half_life))
    unit = "replica-equivalents of queue" if book.queue_mode else "req/s"
    if not pending and not panic and target > stable / util + EPS and target > cur_cap + EPS:
        notes.append(f"recent bursts' high-water mark {target:.3g} {unit}")
    if panic and not pending:
        target = max(target, short / util, cur_cap)
    if cur_cap > 0 and abs(target - cur_cap) <= params.tolerance * cur_cap:
        target = cur_cap
    state = state.with_recommendation(now, target, targets.scale_up_window_s, targets.scale_down_window_s)
    if target < cur_cap - EPS:
        kept = min(cur_cap, max(target, state.window_max()))
        if kept > target + EPS:
            notes.append(f"scale-down window {targets.scale_down_window_s:g} s holds {kept:.3g} {unit}")
        target = kept
        if state.started_at is not None and now - state.started_at < params.stable_window_s:
            notes.append("warming up: no scale-down in the first stable window")
            target = cur_cap
    elif target > cur_cap + EPS:
        target = max(cur_cap, min(target, state.window_min()))
    floor, ceiling, up_limit, down_limit = _bounds(state, current, targets, params, now, active)

    # 6. compose
    cur_total = sum(current.values())
    grew = target > cur_cap + EPS
    if grew:
        cover = cheapest_cover(book.adding(current), target - cur_cap, max(0, floor - cur_total), up_limit - cur_total)
        counts = add_counts(current, cover.counts)
        if cover.short:
            counts = _reshape_up(book, current, counts, target, floor, up_limit, notes)
    elif panic:  # no scale-down in panic, not even of replicas that add no capacity
        counts = dict(current)
    else:
        keep = cheapest_cover(book.keeping(current), target, max(floor, down_limit), min(cur_total, ceiling))
        counts = keep.counts
    counts = _within(book, counts, floor, ceiling)
    if not panic and not grew:
        counts = _recompose(book, counts, target, floor, ceiling, targets.budget_usd_per_hour, params, notes)

    # 7. budget
    capped = False
    if targets.budget_usd_per_hour is not None and book.of(counts)[1] > targets.budget_usd_per_hour + EPS:
        counts, capped = _budget(book, current, counts, targets), True
        notes.append(f"budget ${targets.budget_usd_per_hour:g}/h binds")
    capacity, cost = book.of(counts)
    added = any(n > current.get(k, 0) for k, n in counts.items())
    state = dataclasses.replace(state, last_now=now, last_counts=counts,
                                pending_since=now if added else state.pending_since)
    why = _why(stable, short, cur_cap, ready_cap, panic, book, notes)
    return Decision(counts, _summary(current, counts) + ": " + why, state, capacity, stable, target, cost, panic,
                    capped)


def _bounds(state: ScalingState, current: Mapping[str, int], targets: Targets, params: PolicyParams,
            now: float, active: bool) -> tuple[int, int, int, int]:
    """(floor, ceiling, most replicas this decision, fewest replicas this decision)."""
    cur_total = sum(current.values())
    floor = targets.min_replicas
    if floor == 0 and (cur_total > 0 or active):
        idle = now - (state.active_at if state.active_at is not None else now)
        if not targets.scale_to_zero or idle < targets.scale_to_zero_after_s:
            floor = 1
    ceiling = targets.max_replicas
    up = min(ceiling, max(math.ceil(params.max_scale_up_rate * cur_total), cur_total + params.scale_up_min_step))
    down = max(floor, math.floor(cur_total / params.max_scale_down_rate + EPS))
    return floor, ceiling, max(up, floor), min(down, ceiling)


def _within(book: _Book, counts: dict[str, int], floor: int, ceiling: int) -> dict[str, int]:
    """``counts`` brought inside [floor, ceiling] replicas: cheapest additions, cheapest subset."""
    total = sum(counts.values())
    if total < floor:
        extra = cheapest_cover(book.adding(counts) or book.anything(), 0.0, floor - total, floor - total)
        counts = add_counts(counts, extra.counts)
    elif total > ceiling:
        counts = cheapest_cover(book.keeping(counts), mix_capacity(counts, book.capacity), ceiling, ceiling).counts
    return counts


def _reshape_up(book: _Book, current: Mapping[str, int], counts: dict[str, int], target: float, floor: int,
                limit: int, notes: list[str]) -> dict[str, int]:
    """When adding replicas cannot reach the target within ``limit`` (small replicas fill the
    count), trade the smallest running replicas for the larger ones of the cheapest mix that can."""
    best = cheapest_cover(book.anything(), target, floor, limit)
    if book.of(best.counts)[0] <= book.of(counts)[0] + EPS:
        if not any(c > 0 for c in book.capacity.values()):  # not room: nothing it may add would serve
            notes.append("no shape can serve within the objective (" + "; ".join(book.excluded) + ")")
        else:
            notes.append("capacity short: no shape has room for more" if sum(counts.values()) < limit
                         else f"limited to {limit} replicas this decision")
        return counts
    out = add_counts({k: min(n, current.get(k, 0)) for k, n in best.counts.items()},
                     {k: max(0, n - current.get(k, 0)) for k, n in best.counts.items()})
    spare = limit - sum(out.values())
    for key in sorted(current, key=lambda k: (book.capacity.get(k, 0.0), k), reverse=True):
        keep = min(current[key] - out.get(key, 0), spare) if current[key] > out.get(key, 0) else 0
        if keep > 0:
            out[key] = out.get(key, 0) + keep
            spare -= keep
    notes.append(f"trading small replicas for larger ones to reach {target:.3g} req/s within {limit} replicas")
    return dict(sorted((k, n) for k, n in out.items() if n > 0))


def _recompose(book: _Book, counts: dict[str, int], target: float, floor: int, ceiling: int,
               budget: float | None, params: PolicyParams, notes: list[str]) -> dict[str, int]:
    """Add the replicas of a mix that is cheaper by ``recompose_saving`` (make before break: the
    dearer replicas go in a later decision, once these are ready and the subset step drops them)."""
    best = cheapest_cover(book.anything(), target, floor, ceiling)
    now_cost = book.of(counts)[1]
    if best.short or best.cost >= (1 - params.recompose_saving) * now_cost - EPS:
        return counts
    extra = {k: n - counts.get(k, 0) for k, n in best.counts.items() if n > counts.get(k, 0)}
    if not extra:
        return counts
    grown = add_counts(counts, extra)
    if sum(grown.values()) > ceiling or (budget is not None and book.of(grown)[1] > budget + EPS):
        return counts
    notes.append(f"moving to a cheaper mix (${best.cost:.3g}/h instead of ${now_cost:.3g}/h)")
    return grown


def _budget(book: _Book, current: Mapping[str, int], counts: Mapping[str, int], targets: Targets) -> dict[str, int]:
    """Drop additions dearest first until the mix fits the budget; then running replicas, never
    below ``minReplicas``."""
    budget = targets.budget_usd_per_hour or 0.0
    kept = {k: min(n, current.get(k, 0)) for k, n in counts.items()}
    added = {k: n - kept[k] for k, n in counts.items() if n > kept[k]}
    spare = budget - book.of(kept)[1]
    added = trim_to_budget(added, book.keeping(added), max(0.0, spare), 0) if spare > 0 else {}
    out = add_counts(kept, added)
    # A reshape trades running replicas for new ones; when the budget drops the new ones, the
    # running replicas they were to replace stay (cheapest first), or the pool falls below its floor.
    short = targets.min_replicas - sum(out.values())
    if short > 0:
        dropped = {k: n - out.get(k, 0) for k, n in current.items() if n > out.get(k, 0)}
        for key in sorted(dropped, key=lambda k: (book.price.get(k, 0.0), k)):
            back = min(dropped[key], short)
            out, short = add_counts(out, {key: back}), short - back
            if short <= 0:
                break
    if book.of(out)[1] > budget + EPS:
        out = trim_to_budget(out, book.keeping(out), budget, targets.min_replicas)
    return out


def _hold(book: _Book, state: ScalingState, current: dict[str, int], targets: Targets, now: float,
          why: str, panic: bool = False, demand: float = 0.0) -> Decision:
    counts = _within(book, current, targets.min_replicas, targets.max_replicas)
    added = any(n > current.get(k, 0) for k, n in counts.items())
    state = dataclasses.replace(state, last_now=now, last_counts=counts,
                                pending_since=now if added else state.pending_since)
    capacity, cost = book.of(counts)
    return Decision(counts, f"{_summary(current, counts)}: {why}", state, capacity, demand, book.of(current)[0], cost,
                    panic, held=True)


def _summary(current: Mapping[str, int], counts: Mapping[str, int]) -> str:
    before, after = sum(current.values()), sum(counts.values())
    keys = sorted(set(current) | set(counts))
    deltas = [f"{counts.get(k, 0) - current.get(k, 0):+d} {k}" for k in keys if counts.get(k, 0) != current.get(k, 0)]
    if not deltas:
        return f"hold {after} replica{'s' if after != 1 else ''}"
    verb = "scale up" if after > before else "scale down" if after < before else "reshape"
    return f"{verb} {before} -> {after} ({', '.join(deltas)})"


def _why(stable: float, short: float, cur_cap: float, ready_cap: float, panic: bool, book: _Book,
         notes: list[str]) -> str:
    unit = "replica-equivalents of queue" if book.queue_mode else "req/s"
    if panic:
        head = f"panic: {short:.3g} {unit} in the short window against {ready_cap:.3g} ready"
    else:
        head = f"demand {stable:.3g} {unit} against capacity {cur_cap:.3g}"
    return "; ".join([head, *notes])
