"""The offline oracle: a schedule that sees the whole trace in advance.

It sizes capacity for each short bin (``min(5 s, objective / 2)``) from the work that arrives in
it (90 % utilization, covering the next bin too so queues left at a boundary drain), takes the
cheapest mix of shapes for that capacity (the same :func:`cheapest_cover` gpupool uses), and
then, per shape and replica level, merges busy periods separated by less than a pod start
(keeping a replica through a gap costs the gap; releasing it and starting it again costs the
start). Each replica is created a pod start (plus a MIG re-layout for MIG shapes) before it is
needed and released when its period ends. It is a near-optimal clairvoyant schedule, not a proven
bound; its attainment is measured like every other policy's.
"""

from __future__ import annotations

from collections.abc import Mapping

from gpupool_operator.core.scaling.compose import Option, cheapest_cover
from gpupool_operator.sim.model import Observation
from gpupool_operator.sim.scenario import Scenario
from gpupool_operator.sim.trace import Trace

__all__ = ["ORACLE_UTILIZATION", "Oracle", "bin_seconds", "need_per_bin"]

ORACLE_UTILIZATION = 0.9


def bin_seconds(objective_s: float | None) -> float:
    return max(0.5, min(5.0, objective_s / 2)) if objective_s else 5.0


def need_per_bin(trace: Trace, objective_s: float | None) -> list[float]:
    """Capacity (requests/s of average work) each bin needs, covering the next bin as well."""
    width = bin_seconds(objective_s)
    bins = [0.0] * (int(trace.duration // width) + 2)
    for t, w in zip(trace.times, trace.work, strict=True):
        bins[int(t // width)] += w
    rate = [b / width / ORACLE_UTILIZATION for b in bins]
    return [max(rate[i], rate[i + 1] if i + 1 < len(rate) else 0.0) for i in range(len(rate))]


class Oracle:
    name = "oracle"
    interval_s = 0.5
    last_reason = ""

    def __init__(self, scenario: Scenario, trace: Trace) -> None:
        t, cfg = scenario.targets, scenario.config
        width = bin_seconds(t.objective_s)
        options = [Option(o.key, scenario.capacity(o), o.usd_per_hour, o.room) for o in scenario.usable()]
        floor = t.min_replicas
        covers: dict[float, dict[str, int]] = {}
        series: dict[str, list[int]] = {o.key: [] for o in options}
        for need in need_per_bin(trace, t.objective_s):
            rounded = round(need, 3)
            if rounded not in covers:
                covers[rounded] = cheapest_cover(options, need, floor, t.max_replicas).counts
            for k, column in series.items():
                column.append(covers[rounded].get(k, 0))
        mig = {o.key: o.shape.kind.value == "mig" for o in scenario.usable()}
        changes: list[tuple[float, int, str]] = []  # (time, +1 create / -1 release, shape)
        for key, counts in series.items():
            lead = cfg.pod_start_s + (cfg.mig_relayout_s if mig[key] else 0.0) + self.interval_s
            for level in range(1, max(counts, default=0) + 1):
                for start, end in _merged(counts, level, width, lead):
                    changes.append((start - lead if start > 0 else -1.0, 1, key))
                    changes.append((end, -1, key))
        self.changes = sorted(changes, key=lambda c: (c[0], c[1], c[2]))
        self.next = 0
        self.counts: dict[str, int] = {}

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
