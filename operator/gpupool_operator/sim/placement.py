"""The simulator's view of the cluster: does a mix of replicas fit, and what MIG changes it needs.

Every mix a policy asks for goes through the placement engine (``core.solver.solve`` on the
scenario's snapshot, one demand per shape via ``core.scaling.shape_demands``), exactly as the
operator would place it. Results are memoised per mix: the cluster in a simulation only holds this
model's replicas, so the answer depends on the mix alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gpupool_operator.core.demand import Demand
from gpupool_operator.core.inventory import Snapshot
from gpupool_operator.core.scaling.offers import ShapeOffer, shape_demand, shape_demands
from gpupool_operator.core.solver import Options, solve

__all__ = ["EnginePlacer"]


class EnginePlacer:
    """:class:`~gpupool_operator.sim.model.Placer` backed by the placement engine."""

    def __init__(self, snapshot: Snapshot, demand: Demand, offers: Sequence[ShapeOffer],
                 options: Options | None = None) -> None:
        self.snapshot, self.demand, self.offers = snapshot, demand, tuple(offers)
        self.options = options or Options(move_penalty=0.0)
        self.by_demand = {shape_demand(demand, o.shape, 1).key: o.key for o in self.offers}
        self.cache: dict[tuple[tuple[str, int], ...], tuple[dict[str, int], int]] = {}
        self.solves = 0

    def place(self, counts: Mapping[str, int]) -> tuple[dict[str, int], int]:
        key = tuple(sorted((k, n) for k, n in counts.items() if n > 0))
        hit = self.cache.get(key)
        if hit is not None:
            return dict(hit[0]), hit[1]
        plan = solve(self.snapshot, shape_demands(self.demand, self.offers, dict(key)), self.options)
        self.solves += 1
        fits: dict[str, int] = {}
        for a in plan.assignments:
            shape = self.by_demand.get(a.demand)
            if shape is not None:
                fits[shape] = fits.get(shape, 0) + 1
        result = (fits, len(plan.layout_changes))
        self.cache[key] = result
        return dict(fits), result[1]
