"""The shapes a model may scale onto, what one replica of each delivers and costs, and the
batch-time model that says which of them can meet the latency objective.

Shape choice goes through the placement engine: :func:`offers_for` asks
:func:`~gpupool_operator.core.demand.candidates` which shapes the model accepts in this cluster
(with the pool's ``inferencesPerSecond`` per shape) and :func:`~gpupool_operator.core.solver.solve`
how many replicas of each the cluster can hold and what one costs (its attributed $/h: a whole
GPU, a MIG slice's neutral share, CPU cores). :func:`shape_demands` turns the policy's replicas
per shape back into placement demands, one per shape, so the solver places exactly that mix.

**Batch-time model** (shared by the policy and ``gpupool simulate``, so both agree on what a shape
can do). A replica with profile throughput ``T`` and batch limit ``B`` takes ``B / T`` seconds for
a full batch; any batch costs a fixed share ``a`` of that and the rest grows with its rows:
``t(rows) = (B / T) * (a + (1 - a) * rows / B)``. Under load a request waits for at most the batch
in progress and then rides the next, so every request meets an objective ``L`` while
``2 * t(b) <= L``: the throughput *within the objective* is ``b / t(b)`` for the largest such
batch ``b <= B`` (``T`` itself when full batches qualify), and a replica there should batch at
most ``b`` rows. A shape where even ``b = 1`` misses cannot meet the objective and never absorbs
load.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gpupool_operator.core import catalog, mig
from gpupool_operator.core.demand import Accelerator, Candidate, Demand, Shape, ShapeKind, candidates
from gpupool_operator.core.inventory import Snapshot
from gpupool_operator.core.solver import Options, products_of, solve

__all__ = [
    "ShapeOffer", "batch_seconds", "batch_within", "capacity_within", "gpu_share", "offers_for", "shape_demand",
    "shape_demands",
]


@dataclass(frozen=True, slots=True)
class ShapeOffer:
    """One shape the model may run on in this cluster, per replica."""

    key: str  # human-readable and unique among a model's offers, e.g. "A100-80GB MIG 1g.10gb"
    shape: Shape
    #: Inferences per second one replica sustains (the pool's ``inferencesPerSecond``); ``None``:
    #: the pool declares none for this shape.
    throughput: float | None
    usd_per_hour: float  # attributed cost of one replica
    room: int  # replicas of this shape the cluster can hold for this model
    gpus: float = 0.0  # GPUs one replica occupies (a MIG slice's neutral share; 0 on CPU)
    latency_ms: float | None = None  # a measured latency from the profile, when the pool gives one


def batch_seconds(throughput: float, max_batch: int, rows: float, fixed_fraction: float) -> float:
    """Seconds one replica takes for a batch of ``rows`` (see the module's batch-time model)."""
    full = max_batch / throughput
    return full * (fixed_fraction + (1.0 - fixed_fraction) * rows / max_batch)


def batch_within(offer: ShapeOffer, max_batch: int, objective_s: float | None,
                 fixed_fraction: float) -> tuple[int, str | None]:
    """The largest batch a replica of ``offer`` may form with every request within the objective
    (``max_batch`` without an objective), or 0 and why none can. A purely computational function."""
    thr = offer.throughput
    if thr is None or thr <= 0:
        return 0, f"{offer.key}: no inferencesPerSecond declared, so it cannot be sized for load"
    if objective_s is None:
        return max_batch, None
    if offer.latency_ms is not None and offer.latency_ms / 1000 > objective_s:
        return 0, f"{offer.key}: latency {offer.latency_ms:g} ms exceeds the {objective_s * 1000:g} ms objective"
    if 2 * batch_seconds(thr, max_batch, max_batch, fixed_fraction) <= objective_s + 1e-12:
        return max_batch, None
    full = max_batch / thr
    best = math.floor(max_batch * ((objective_s / (2 * full)) - fixed_fraction) / (1.0 - fixed_fraction) + 1e-9)
    if best < 1:
        lone = batch_seconds(thr, max_batch, 1, fixed_fraction)
        return 0, (f"{offer.key}: cannot meet the {objective_s * 1000:g} ms objective under load "
                   f"(one request takes {lone * 1000:.0f} ms, and may wait as long for the batch ahead)")
    return min(best, max_batch), None


def capacity_within(offer: ShapeOffer, max_batch: int, objective_s: float | None,
                    fixed_fraction: float) -> tuple[float, str | None]:
    """Inferences per second one replica of ``offer`` sustains with every request within the
    objective (batches of :func:`batch_within`), and why it is zero when it is. A purely
    computational function. On a shape whose full batches would miss the objective, the worker
    should be told to batch at most that many rows there (``GPUPOOL_MAX_BATCH_SIZE`` per pod);
    the simulator's replicas do."""
    batch, why = batch_within(offer, max_batch, objective_s, fixed_fraction)
    if batch == 0 or offer.throughput is None:
        return 0.0, why
    if batch == max_batch:
        return offer.throughput, None
    return batch / batch_seconds(offer.throughput, max_batch, batch, fixed_fraction), None


def shape_demand(demand: Demand, shape: Shape, replicas: int, throughput: float | None = None) -> Demand:
    """``demand`` restricted to exactly ``shape``, for ``replicas`` replicas, keyed
    ``<demand key>#<shape>``. Budget and spot promises are left to the caller (the scaling policy
    enforces the budget on the whole mix)."""
    if shape.kind is ShapeKind.GPU:
        acc = Accelerator(ShapeKind.GPU, products=(shape.product,), throughput=throughput)
    elif shape.kind is ShapeKind.MIG:
        acc = Accelerator(ShapeKind.MIG, products=(shape.product,), profiles=(shape.profile,), throughput=throughput)
    else:
        acc = Accelerator(ShapeKind.CPU, cpu_millis=shape.cpu_millis, host_memory_mib=shape.memory_mib,
                          throughput=throughput)
    return dataclasses.replace(demand, key=f"{demand.key}#{shape.describe()}", replicas=replicas,
                               accelerators=(acc,), min_throughput=None, min_off_spot=0, budget=None, guaranteed=0)


def shape_demands(demand: Demand, offers: Sequence[ShapeOffer], counts: Mapping[str, int]) -> list[Demand]:
    """One placement demand per shape with replicas in ``counts`` (offer key -> replicas)."""
    by_key = {o.key: o for o in offers}
    return [shape_demand(demand, by_key[key].shape, n, by_key[key].throughput)
            for key, n in sorted(counts.items()) if n > 0]


def offers_for(demand: Demand, snapshot: Snapshot, max_replicas: int,
               options: Options | None = None) -> tuple[tuple[ShapeOffer, ...], tuple[str, ...]]:
    """The shapes ``demand`` may scale onto in ``snapshot``, with per-replica cost and room, and
    the reasons for every shape left out. Room is what the cluster holds of that shape alone, up
    to ``max_replicas``; shapes compete for the same GPUs, so a mix is checked again by the
    caller's placement. A purely computational function (it runs the solver once per shape)."""
    cands, rejected = candidates(demand, products_of(snapshot))
    offers: list[ShapeOffer] = []
    reasons = list(rejected)
    keys = _keys(cands)
    for cand, key in zip(cands, keys, strict=True):
        plan = solve(snapshot, [shape_demand(demand, cand.shape, max_replicas, cand.throughput)], options)
        room = len(plan.assignments)
        if room == 0:
            why = plan.unplaced[0].reason if plan.unplaced else "no capacity"
            reasons.append(f"{key}: no room in the cluster ({why})")
            continue
        cost = sum(plan.cost_by_demand.values()) / room
        offers.append(ShapeOffer(key, cand.shape, cand.throughput, round(cost, 6), room, gpu_share(cand.shape),
                                 cand.latency_ms))
    return tuple(offers), tuple(reasons)


def gpu_share(shape: Shape) -> float:
    """GPUs one replica of ``shape`` occupies: whole GPUs, a MIG slice's neutral share
    max(compute/7, memory/8), 0 for CPU (the share the price model charges)."""
    if shape.kind is ShapeKind.GPU:
        return float(shape.gpus)
    if shape.kind is ShapeKind.MIG:
        try:
            return mig.fraction(catalog.by_key(shape.product).profile(shape.profile))
        except KeyError:
            return 1.0
    return 0.0


def _keys(cands: Sequence[Candidate]) -> list[str]:
    names = [c.shape.describe() for c in cands]
    return [n if names.count(n) == 1 else f"{n} {c.shape.memory_mib}Mi" for n, c in zip(names, cands, strict=True)]
