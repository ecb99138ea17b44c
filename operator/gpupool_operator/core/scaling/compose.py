"""Which replicas, of which shapes, provide a capacity at the lowest $/h.

The policy decides a capacity (inferences per second within the objective); this module turns it
into replicas per shape. :func:`cheapest_cover` is an exact branch and bound over the shapes
(a handful) for the cheapest mix that covers a capacity with a bounded replica count, which the
policy uses three ways:

* adding capacity: the cheapest mix of shapes with room that covers the gap (one shape when one
  is cheapest, a small slice for a small gap, a large GPU for a large one);
* removing capacity: the cheapest subset of the running replicas that still covers the target.
  In bulk that removes the most expensive capacity per unit of throughput first; at low load it
  lets the GPU tier go when a cheaper replica (CPU) alone covers what is left;
* the budget: the mix with the most capacity that fits, dropping the dearest capacity first.

Purely computational, deterministic (ties break on capacity, replica count, then key), and bounded
by a node count rather than time (the core has no clock).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["Cover", "Option", "add_counts", "cheapest_cover", "mix_capacity", "mix_cost", "trim_to_budget"]

EPS = 1e-9
MAX_NODES = 4_000
#: Mixes within this share of the best one found are not searched for (0.1 %: cents per hour).
GAP = 1e-3


@dataclass(frozen=True, slots=True)
class Option:
    """A shape the mix may use: capacity and price of one replica, and how many it may have."""

    key: str
    capacity: float
    price: float
    limit: int


@dataclass(frozen=True, slots=True)
class Cover:
    counts: dict[str, int] = field(default_factory=dict)
    capacity: float = 0.0
    cost: float = 0.0
    #: The options could not reach the capacity asked for: this is the most they provide.
    short: bool = False


def mix_cost(counts: Mapping[str, int], price: Mapping[str, float]) -> float:
    return sum(n * price.get(k, 0.0) for k, n in counts.items())


def mix_capacity(counts: Mapping[str, int], capacity: Mapping[str, float]) -> float:
    return sum(n * capacity.get(k, 0.0) for k, n in counts.items())


def add_counts(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, n in b.items():
        out[k] = out.get(k, 0) + n
    return {k: n for k, n in sorted(out.items()) if n > 0}


def cheapest_cover(options: Sequence[Option], need: float, min_total: int = 0,
                   max_total: int | None = None) -> Cover:
    """The cheapest counts with total capacity >= ``need`` and ``min_total <= replicas <=
    max_total`` (each option at most its ``limit``). When no mix reaches ``need``, the mix with the
    most capacity, marked ``short``. Options with zero capacity only fill ``min_total``."""
    opts = sorted((o for o in options if o.limit > 0),
                  key=lambda o: (o.price / o.capacity if o.capacity > 0 else math.inf, -o.capacity, o.key))
    cap_total = max_total if max_total is not None else sum(o.limit for o in opts)
    min_total = min(min_total, cap_total)
    most = _most_capacity(opts, cap_total)
    if need > most.capacity + EPS:
        return _with_minimum(most, opts, min_total, cap_total, short=True)
    search = _Search(opts, min_total, cap_total)
    search.run(max(0.0, need))
    if search.best is None:  # node limit hit before any solution: the greedy one is feasible
        return _with_minimum(most, opts, min_total, cap_total, short=False)
    counts = {o.key: n for o, n in zip(opts, search.best, strict=True) if n > 0}
    return Cover(dict(sorted(counts.items())), mix_capacity(counts, _caps(opts)), mix_cost(counts, _prices(opts)))


def trim_to_budget(counts: Mapping[str, int], options: Sequence[Option], budget: float,
                   min_total: int) -> dict[str, int]:
    """``counts`` less its dearest capacity (highest $/h per inference/s first, replicas without
    capacity first of all) until it costs at most ``budget`` or only ``min_total`` replicas remain."""
    price, caps = _prices(options), _caps(options)
    out = {k: n for k, n in counts.items() if n > 0}

    def dearest(k: str) -> tuple[float, float, str]:
        c = caps.get(k, 0.0)
        return (math.inf if c <= 0 else price.get(k, 0.0) / c, price.get(k, 0.0), k)

    while sum(out.values()) > min_total and mix_cost(out, price) > budget + EPS:
        key = max(out, key=dearest)
        out[key] -= 1
        if out[key] == 0:
            del out[key]
    return dict(sorted(out.items()))


class _Search:
    """Depth-first branch and bound over options sorted by $/capacity (best first). The bound is
    the fractional cover of what is left (options in ratio order up to their limits); a branch is
    pruned unless it could beat the best mix found by more than ``GAP`` of its cost."""

    def __init__(self, opts: list[Option], min_total: int, max_total: int) -> None:
        self.opts = opts
        self.min_total = min_total
        self.max_total = max_total
        n = len(opts)
        self.min_price = [math.inf] * (n + 1)
        for i in range(n - 1, -1, -1):
            self.min_price[i] = min(opts[i].price, self.min_price[i + 1])
        self.best: list[int] | None = None
        self.best_key: tuple[float, float, int] = (math.inf, 0.0, 0)
        self.nodes = 0
        self.counts = [0] * n

    def run(self, need: float) -> None:
        self._visit(0, need, 0, 0.0, 0.0)

    def _bound(self, i: int, need: float, total: int) -> float:
        """Least cost to cover ``need`` with options ``i..`` used fractionally within their limits."""
        cost, left, slots = 0.0, need, float(self.max_total - total)
        for o in self.opts[i:]:
            if left <= EPS:
                break
            if o.capacity <= 0:
                continue
            take = min(left / o.capacity, o.limit, slots)
            cost += take * o.price
            left -= take * o.capacity
            slots -= take
        if left > EPS:
            return math.inf
        return max(cost, max(0, self.min_total - total) * self.min_price[i])

    def _visit(self, i: int, need: float, total: int, cost: float, capacity: float) -> None:
        self.nodes += 1
        if need <= EPS and total >= self.min_total:
            key = (round(cost, 9), -round(capacity, 9), total)
            if key < self.best_key:
                self.best_key, self.best = key, list(self.counts)
            return
        if i == len(self.opts) or total >= self.max_total or self.nodes > MAX_NODES:
            return
        if cost + self._bound(i, need, total) > self.best_key[0] * (1 - GAP) + EPS:
            return
        o = self.opts[i]
        room = min(o.limit, self.max_total - total)
        wanted = math.ceil(need / o.capacity - EPS) if need > 0 and o.capacity > 0 else 0
        hi = min(room, max(wanted, self.min_total - total))
        for k in range(hi, -1, -1):
            self.counts[i] = k
            self._visit(i + 1, need - k * o.capacity, total + k, cost + k * o.price, capacity + k * o.capacity)
        self.counts[i] = 0


def _most_capacity(opts: Sequence[Option], max_total: int) -> Cover:
    """The largest capacity ``max_total`` replicas give: the biggest replicas first."""
    counts: dict[str, int] = {}
    left = max_total
    for o in sorted(opts, key=lambda o: (-o.capacity, o.price, o.key)):
        if left <= 0 or o.capacity <= 0:
            break
        take = min(o.limit, left)
        counts[o.key] = take
        left -= take
    return Cover(dict(sorted(counts.items())), mix_capacity(counts, _caps(opts)), mix_cost(counts, _prices(opts)))


def _with_minimum(cover: Cover, opts: Sequence[Option], min_total: int, max_total: int, short: bool) -> Cover:
    """``cover`` topped up with the cheapest replicas to ``min_total``."""
    counts = dict(cover.counts)
    missing = min_total - sum(counts.values())
    for o in sorted(opts, key=lambda o: (o.price, -o.capacity, o.key)):
        if missing <= 0:
            break
        take = min(o.limit - counts.get(o.key, 0), missing, max_total - sum(counts.values()))
        if take > 0:
            counts[o.key] = counts.get(o.key, 0) + take
            missing -= take
    return Cover(dict(sorted(counts.items())), mix_capacity(counts, _caps(opts)), mix_cost(counts, _prices(opts)),
                 short)


def _caps(opts: Sequence[Option]) -> dict[str, float]:
    return {o.key: o.capacity for o in opts}


def _prices(opts: Sequence[Option]) -> dict[str, float]:
    return {o.key: o.price for o in opts}
