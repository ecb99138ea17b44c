"""The offline oracle: a schedule that sees the whole trace in advance.

It sizes the capacity each short bin needs (``min(5 s, objective / 2)`` wide) from the work that
arrives around it (:func:`need_per_bin`: any window of 1 to 32 bins must be served within the
objective, at 80 % utilization). It then builds candidate schedules (one shape for everything, for each shape that meets
the objective; the cheapest mix per bin, from the :func:`cheapest_cover` gpupool uses; the
cheapest-ratio shape for the bulk with the cheapest cover of the rest) and, per shape and replica
level, merges busy periods separated by less than a replica start (keeping a replica through a gap
costs the gap; releasing and starting it again costs the start). The cheapest candidate is run:
each replica is created one start (plus a MIG re-layout for MIG shapes) before it is needed and
released when its period ends. It is a near-optimal clairvoyant schedule, not a proven bound, and
its attainment is measured like every other policy's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from gpupool_operator.core.scaling.compose import Cover, Option, cheapest_cover
from gpupool_operator.sim.model import Observation
from gpupool_operator.sim.scenario import Scenario
from gpupool_operator.sim.trace import Trace

__all__ = ["ORACLE_UTILIZATION", "Oracle", "bin_seconds", "need_per_bin"]

ORACLE_UTILIZATION = 0.8

Series = dict[str, list[int]]  # shape -> replicas per bin


def bin_seconds(objective_s: float | None) -> float:
    return max(0.5, min(5.0, objective_s / 2)) if objective_s else 5.0


def need_per_bin(trace: Trace, objective_s: float | None) -> list[float]:
    """Capacity (requests/s of average work) each bin needs: work arriving over ``w`` seconds can be
    served within the objective ``L`` by a capacity of ``work / (w + L / 2)`` (half the objective
    is left for the batch itself), so each bin takes the most that any window of 1 to 32 bins
    starting with an arrival and covering it asks, at 80 % utilization."""
    width = bin_seconds(objective_s)
    slack = (objective_s or 2 * width) / 2
    bins = [0.0] * (int(trace.duration // width) + 2)
    for t, w in zip(trace.times, trace.work, strict=True):
        bins[int(t // width)] += w
    prefix = [0.0]
    for b in bins:
        prefix.append(prefix[-1] + b)
    need = [0.0] * len(bins)
    k = 1
    while k <= 32:
        for start in range(len(bins) - k + 1):
            if bins[start] <= 0:  # a window is needed from its first arrival on, not before
                continue
            rate = (prefix[start + k] - prefix[start]) / (k * width + slack) / ORACLE_UTILIZATION
            for i in range(start, start + k):
                need[i] = max(need[i], rate)
        k *= 2
    return need


class Oracle:
    name = "oracle"
    interval_s = 0.5
    last_reason = ""

    def __init__(self, scenario: Scenario, trace: Trace) -> None:
        t, cfg = scenario.targets, scenario.config
        self.width = bin_seconds(t.objective_s)
        usable = scenario.usable()
        options = [Option(o.key, scenario.capacity(o), o.usd_per_hour, o.room) for o in usable]
        self.price = {o.key: o.price for o in options}
        self.lead = {o.key: cfg.pod_start_s + (cfg.mig_relayout_s if o.shape.kind.value == "mig" else 0.0)
                     + self.interval_s for o in usable}
        needs = need_per_bin(trace, t.objective_s)
        floor, ceiling = t.min_replicas, t.max_replicas
        candidates = [_per_bin(needs, [o], floor, ceiling) for o in options]
        candidates.append(_per_bin(needs, options, floor, ceiling))
        best = min(options, key=lambda o: (o.price / o.capacity, -o.capacity, o.key))
        candidates.append(_bulk_and_rest(needs, best, options, floor, ceiling))
        # the fewest bins short of capacity first (none, where any candidate manages), then the cost
        schedules = [(short, *self._schedule(series)) for series, short in candidates]
        _, changes, cost = min(schedules, key=lambda s: (s[0], s[2]))
        self.last_reason = f"clairvoyant schedule, ${cost:.2f} planned"
        self.changes = changes
        self.next = 0
        self.counts: dict[str, int] = {}

    def _schedule(self, series: Series) -> tuple[list[tuple[float, int, str]], float]:
        """(time, +1 create / -1 release, shape) changes, and what they cost."""
        changes: list[tuple[float, int, str]] = []
        cost = 0.0
        for key, counts in series.items():
            lead = self.lead[key]
            for level in range(1, max(counts, default=0) + 1):
                for start, end in _merged(counts, level, self.width, lead):
                    create = start - lead if start > 0 else -1.0
                    changes += [(create, 1, key), (end, -1, key)]
                    cost += (end - max(0.0, create)) * self.price[key] / 3600
        return sorted(changes), cost

    def _advance(self, now: float) -> dict[str, int]:
        while self.next < len(self.changes) and self.changes[self.next][0] <= now:
            _, delta, key = self.changes[self.next]
            self.counts[key] = self.counts.get(key, 0) + delta
            self.next += 1
        return {k: n for k, n in self.counts.items() if n > 0}

    def initial(self) -> Mapping[str, int]:
        return self._advance(0.0)

    def decide(self, obs: Observation) -> Mapping[str, int]:
        return self._advance(obs.now)


def _per_bin(needs: Sequence[float], options: Sequence[Option], floor: int, ceiling: int) -> tuple[Series, int]:
    """The cheapest mix of ``options`` per bin, and how many bins it leaves short."""
    covers: dict[float, Cover] = {}
    series: Series = {o.key: [] for o in options}
    short = 0
    for need in needs:
        rounded = round(need, 3)
        if rounded not in covers:
            covers[rounded] = cheapest_cover(options, need, floor, ceiling)
        cover = covers[rounded]
        short += cover.short
        for key, column in series.items():
            column.append(cover.counts.get(key, 0))
    return series, short


def _bulk_and_rest(needs: Sequence[float], bulk: Option, options: Sequence[Option], floor: int,
                   ceiling: int) -> tuple[Series, int]:
    """Whole replicas of the cheapest-ratio shape for the bulk, the cheapest cover for the rest."""
    series: Series = {o.key: [] for o in options}
    short = 0
    for need in needs:
        n = min(bulk.limit, ceiling, math.floor(need / bulk.capacity))
        rest = cheapest_cover(options, need - n * bulk.capacity, max(0, floor - n), ceiling - n)
        short += rest.short
        for key, column in series.items():
            column.append(rest.counts.get(key, 0) + (n if key == bulk.key else 0))
    return series, short


def _merged(counts: list[int], level: int, width: float, gap_ok: float) -> list[tuple[float, float]]:
    """Periods where ``counts >= level``, joined across gaps shorter than ``gap_ok`` seconds."""
    periods: list[list[float]] = []
    for i, n in enumerate(counts):
        if n < level:
            continue
        start, end = i * width, (i + 1) * width
        if periods and start - periods[-1][1] <= gap_ok + 1e-9:
            periods[-1][1] = end
        else:
            periods.append([start, end])
    return [(s, e) for s, e in periods]
