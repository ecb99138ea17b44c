"""One simulation setup: a model of an InferencePool on a cluster, its targets and shapes.

:func:`scenario_for` builds it through the same core functions the operator uses
(``demand.from_pool``, ``scaling.targets_for``, ``scaling.offers_for``), so the simulator sees the
shapes, prices and room the placement engine would give, and checks every mix against it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from gpupool_operator.api.inferencepool import InferencePool
from gpupool_operator.core.demand import Demand, ShapeKind, from_pool
from gpupool_operator.core.inventory import Snapshot
from gpupool_operator.core.scaling.offers import ShapeOffer, batch_within, capacity_within, offers_for
from gpupool_operator.core.scaling.params import DEFAULT_PARAMS, PolicyParams
from gpupool_operator.core.scaling.targets import Targets, targets_for
from gpupool_operator.sim.model import Placer, ShapeModel, SimConfig
from gpupool_operator.sim.placement import EnginePlacer

__all__ = ["Scenario", "ScenarioError", "scenario_for"]


class ScenarioError(ValueError):
    """The pool and cluster do not make a simulation (the message names what is missing)."""


@dataclass(frozen=True)
class Scenario:
    model: str  # "namespace/pool/model"
    targets: Targets
    offers: tuple[ShapeOffer, ...]
    rejected: tuple[str, ...]
    params: PolicyParams
    config: SimConfig
    placer: Placer | None = None

    def capacity(self, offer: ShapeOffer) -> float:
        """Requests/s one replica of ``offer`` serves within the objective."""
        return capacity_within(offer, self.targets.max_batch_size, self.targets.objective_s,
                               self.params.fixed_fraction(offer.shape.kind))[0]

    def usable(self) -> tuple[ShapeOffer, ...]:
        """Offers that can absorb load (some throughput within the objective)."""
        return tuple(o for o in self.offers if self.capacity(o) > 0)

    def baseline_shape(self) -> ShapeOffer:
        """The one shape a single-Deployment autoscaler scales: the lowest $/h per request/s
        within the objective (then the larger replica), as gpupool's placement would pick it."""
        usable = self.usable()
        if not usable:
            raise ScenarioError(f"{self.model}: no shape can meet the latency objective: "
                                + "; ".join(self.rejected[-3:]))
        return min(usable, key=lambda o: (o.usd_per_hour / self.capacity(o), -self.capacity(o), o.key))

    def shape_models(self) -> dict[str, ShapeModel]:
        t = self.targets
        out = {}
        for o in self.offers:
            a = self.params.fixed_fraction(o.shape.kind)
            limit = batch_within(o, t.max_batch_size, t.objective_s, a)[0]
            out[o.key] = ShapeModel(o.key, o.throughput or 1.0, o.usd_per_hour, o.gpus, o.shape.kind is ShapeKind.MIG,
                                    a, limit or t.max_batch_size)
        return out

    def restricted(self, keep: Sequence[ShapeOffer]) -> Scenario:
        """This scenario with only the offers in ``keep`` (e.g. no CPU tier)."""
        keys = {o.key for o in keep}
        return dataclasses.replace(self, offers=tuple(o for o in self.offers if o.key in keys))


def scenario_for(pool: InferencePool, model: str, snapshot: Snapshot, config: SimConfig,
                 params: PolicyParams = DEFAULT_PARAMS, place: bool = True) -> Scenario:
    """The scenario of ``model`` in ``pool`` on ``snapshot``; ``config`` supplies pod start and MIG
    re-layout delays (its batch, objective and replica fields are filled from the pool)."""
    targets = targets_for(pool, model)
    demand = _demand(pool, model)
    offers, rejected = offers_for(demand, snapshot, targets.max_replicas)
    if not offers:
        raise ScenarioError(f"{demand.key}: no shape of this model fits the cluster: " + "; ".join(rejected[:5]))
    cfg = dataclasses.replace(config, max_batch=targets.max_batch_size, objective_s=targets.objective_s,
                              max_replicas=targets.max_replicas)
    placer = EnginePlacer(snapshot, demand, offers) if place else None
    caps = {o.key: capacity_within(o, targets.max_batch_size, targets.objective_s,
                                   params.fixed_fraction(o.shape.kind)) for o in offers}
    rejected = rejected + tuple(why for _, why in caps.values() if why)
    return Scenario(demand.key, targets, offers, rejected, params, cfg, placer)


def _demand(pool: InferencePool, model: str) -> Demand:
    name = f"/{model}"
    for d in from_pool(pool):
        if d.key.endswith(name):
            return d
    raise ScenarioError(f"InferencePool {pool.metadata.name}: no model {model!r}")
