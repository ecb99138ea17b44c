"""The placement solver's shared parts: options, the portfolio, the replica record, and the state
every phase reads (see :mod:`gpupool_operator.core.solver` for the algorithm).

Private to the solver modules (``greedy``, ``repair``, ``solver``), which extend
:class:`SolverBase` in that order; nothing outside them should need this module except for
:class:`Options` and :class:`Variant`, which ``solver`` re-exports.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpupool_operator.core import catalog, mig
from gpupool_operator.core.cost import PriceTier, SlicePricing, slice_share
from gpupool_operator.core.demand import Candidate, Demand, Products, Shape, ShapeKind, Strategy
from gpupool_operator.core.inventory import Snapshot
from gpupool_operator.core.plan import Eviction
from gpupool_operator.core.state import GpuSlot, GpuState, Group, MigPolicy, NodeState, State, Taints
from gpupool_operator.core.taints import admission

if TYPE_CHECKING:
    from gpupool_operator.api.config import GPUPoolConfig

__all__ = ["LARGE_REPLICAS", "PORTFOLIO", "Options", "SolverBase", "Variant", "options_from_config", "restart_options",
           "restart_variants"]

EPS = 1e-9
EJECT_HOSTS = 64  # GPUs examined per ejection attempt (bounds the repair work on large clusters)


@dataclass(frozen=True, slots=True)
class Options:
    """Knobs of one placement cycle."""

    #: USD per hour a move must save, per running replica moved, before the plan moves it.
    move_penalty: float = 0.5
    #: Run the repair moves (close under-filled GPUs, downgrade to cheaper GPUs).
    improve: bool = True
    #: Run the portfolio of variants plus the whole-GPU-only plan and keep the best (see :func:`solve`).
    portfolio: bool = True
    #: How many :data:`PORTFOLIO` variants to run; ``None``: all of them up to
    #: :data:`LARGE_REPLICAS` replicas, else one (the repairs matter less than speed there).
    portfolio_size: int | None = None
    #: Ruin-and-recreate attempts per plan (empty one or two GPUs, re-place their replicas greedily,
    #: keep the result if cheaper). A count, not a time limit: the core has no clock.
    #: ``None``: 300, or 10 above :data:`LARGE_REPLICAS` replicas.
    lns_attempts: int | None = None
    #: GPUs the close pass tries to empty per pass, least filled first; ``None``: all of them, or
    #: 120 above :data:`LARGE_REPLICAS` replicas.
    close_attempts: int | None = None
    #: Model pairs the demand-level ruin and recreate tries (every replica of two models at once);
    #: ``None``: 300, or none above :data:`LARGE_REPLICAS` replicas.
    pair_attempts: int | None = None
    #: Whether the plan may change MIG layouts (GPUPoolConfig ``spec.mig.policy``): ``ANY``, or
    #: ``DISABLED`` (existing instances and whole GPUs only). For AllowList pass ``allowed_layouts``.
    mig_policy: MigPolicy = MigPolicy.ANY
    #: GPUPoolConfig ``mig.policy: AllowList``: the mig-parted configs the plan may set, by name
    #: (``{"all-1g.10gb": {"1g.10gb": 7}, "all-disabled": None}``; one layout for every GPU of a
    #: node, as mig-parted's ``devices: all`` applies it). A well-known name (``all-disabled``,
    #: ``all-enabled``, ``all-<profile>``, ``all-balanced``) means its layout on each node's own
    #: product, whatever its value here. ``None``: no allow-list.
    allowed_layouts: Mapping[str, Mapping[str, int] | None] | None = None
    #: How a MIG slice's attributed price is derived from its GPU's (GPUPoolConfig ``migSlicePricing``).
    slice_pricing: SlicePricing = SlicePricing.MAX_SHARE
    #: Rounds of "place what is still unplaced, then repair" after the first (a fixpoint, bounded):
    #: a move that frees capacity can let a replica in that found no room before.
    fixpoint_rounds: int = 3
    #: Extra portfolio members beyond :data:`PORTFOLIO`: most-constrained-first orderings and
    #: deterministic reshuffles of the model order (each a full greedy + repair run; the best plan
    #: wins). ``None``: :data:`RESTARTS_SMALL` up to :data:`SMALL_REPLICAS` replicas, none above
    #: (there one plan already takes a second or more).
    restarts: int | None = None
    #: Kicks tried on the portfolio's winner (iterated local search): empty one or two GPUs,
    #: forbid them, re-place their replicas elsewhere, repair again from there, and keep the
    #: result only when it ends cheaper. Reaches plans every strictly improving move misses (one
    #: dearer step, then savings). ``None``: :data:`KICKS_SMALL` up to :data:`SMALL_REPLICAS`
    #: replicas, none above.
    kicks: int | None = None

    def resolved(self, replicas: int) -> Options:
        """These options with every ``None`` replaced by its size-dependent default."""
        large = replicas > LARGE_REPLICAS
        return dataclasses.replace(
            self,
            portfolio_size=self.portfolio_size if self.portfolio_size is not None else (1 if large else 4),
            lns_attempts=self.lns_attempts if self.lns_attempts is not None else (10 if large else 300),
            close_attempts=self.close_attempts if self.close_attempts is not None else (120 if large else 10**9),
            pair_attempts=self.pair_attempts if self.pair_attempts is not None else (0 if large else 300),
            restarts=self.restarts if self.restarts is not None else (
                RESTARTS_SMALL if replicas <= SMALL_REPLICAS else 0),
            kicks=self.kicks if self.kicks is not None else (KICKS_SMALL if replicas <= SMALL_REPLICAS else 0),
        )


def options_from_config(
    config: GPUPoolConfig, base: Options | None = None, configs: Mapping[str, Mapping[str, int] | None] | None = None,
) -> tuple[Options, tuple[str, ...]]:
    """``base`` (default :class:`Options`) with what a GPUPoolConfig decides about placement:
    ``migSlicePricing`` (the attributed price of a slice) and ``mig.policy`` (Any, Disabled, or
    AllowList with its ``allowedLayouts``), and the allowed names it could not use.

    A well-known config name resolves per product (:func:`~gpupool_operator.core.mig.named_layout`);
    any other name needs its layout in ``configs`` (the MIG manager's ConfigMap, name -> the
    ``mig-devices`` of its ``devices: all`` entry, ``None`` for MIG off): one that is not there is
    returned as unusable, so the caller can say so, and the plan never sets it."""
    from gpupool_operator.api.config import MigLayoutPolicy

    opts = base or Options()
    pricing = SlicePricing(config.spec.mig_slice_pricing.value)
    policy = config.spec.mig.policy
    if policy is MigLayoutPolicy.DISABLED:
        return dataclasses.replace(opts, slice_pricing=pricing, mig_policy=MigPolicy.DISABLED,
                                   allowed_layouts=None), ()
    if policy is MigLayoutPolicy.ANY:
        return dataclasses.replace(opts, slice_pricing=pricing, mig_policy=MigPolicy.ANY, allowed_layouts=None), ()
    given = configs or {}
    allowed: dict[str, Mapping[str, int] | None] = {}
    unusable: list[str] = []
    for name in config.spec.mig.allowed_layouts:
        if name in given:
            allowed[name] = given[name]
        elif any(mig.named_layout(p, name)[0] for p in catalog.PRODUCTS if p.mig_capable):
            allowed[name] = None  # a well-known name: resolved on each node's product
        else:
            unusable.append(name)
    return dataclasses.replace(opts, slice_pricing=pricing, mig_policy=MigPolicy.ALLOW_LIST,
                               allowed_layouts=allowed), tuple(unusable)


#: Above this many replicas per cycle, :class:`Options` defaults trade a little cost for speed.
LARGE_REPLICAS = 2000
#: Up to this many replicas a plan runs :data:`RESTARTS_SMALL` extra orderings (tens of ms each).
SMALL_REPLICAS = 300
RESTARTS_SMALL = 26
#: Kicks (:attr:`Options.kicks`) tried on the winning plan up to :data:`SMALL_REPLICAS` replicas.
KICKS_SMALL = 8


@dataclass(frozen=True, slots=True)
class Variant:
    """One member of the solver portfolio: processing order and how a new GPU's price is spread."""

    #: "two-phase" (GPU-bound models first, largest first), "price" (one FFD pass), "constrained"
    #: (fewest reachable GPUs first, then largest) or "shuffle-<n>" (two-phase, the models within each
    #: phase in a fixed pseudo-random order: a hash of n and the model's key, no randomness)
    order: str = "two-phase"
    amortize: str = "share"  # "share" (neutral slice share) or "self" (this model's replicas)


#: The portfolio :func:`~gpupool_operator.core.solver.solve` runs; the cheapest plan that places the
#: most replicas wins.
PORTFOLIO = (Variant("two-phase", "share"), Variant("two-phase", "self"), Variant("price", "share"),
             Variant("price", "self"))


def restart_options(options: Options) -> Options:
    """The options of a restart: the same, with a tenth of the ruin-and-recreate attempts."""
    return dataclasses.replace(options, lns_attempts=(options.lns_attempts or 0) // 10,
                               pair_attempts=(options.pair_attempts or 0) // 10)


def restart_variants(n: int) -> tuple[Variant, ...]:
    """The ``n`` extra portfolio members (:attr:`Options.restarts`): the two most-constrained-first
    orderings, then reshuffles (a new GPU's price spread by slice share), which run with a tenth
    of the ruin-and-recreate budget (:func:`restart_options`)."""
    out = [Variant("constrained", "share"), Variant("constrained", "self")]
    out += [Variant(f"shuffle-{k}", "share") for k in range(max(0, n - 2))]
    return tuple(out[:n])


@dataclass(slots=True, eq=False)  # identity semantics: two replicas may look alike
class Rep:
    demand: int
    shape: Shape
    node: NodeState
    gpus: list[GpuSlot]
    start: int | None = None  # start slot when on a FIXED GPU
    pod: str | None = None  # running pod kept
    reason: str = ""
    #: True while the replica sits on a FIXED instance (start known) rather than a PLANNED layout
    fixed: bool = False


class SolverBase:
    """State and bookkeeping shared by the greedy placement and the repair moves."""

    snapshot: Snapshot
    demands: list[Demand]
    options: Options
    variant: Variant
    state: State
    cands: list[tuple[Candidate, ...]]
    rejected: list[tuple[str, ...]]
    index: dict[str, int]
    products: Products
    reps: dict[int, Rep]  # insertion-ordered set of placed replicas, by id()
    by_demand: dict[int, list[Rep]]
    capture: list[Rep] | None  # collects replicas added while set
    slot_index: dict[int, list[Rep]]  # GPU order -> replicas, rebuilt per repair pass
    mig_hosts: dict[str, list[int]]  # product -> GPUs with planned MIG replicas
    evictions: list[Eviction]
    unplaced: dict[int, int]
    no_spot: bool  # set while placing the replicas a model must keep off spot
    eject_budget: int
    final_layout: dict[int, mig.Placement]  # GPU order -> layout in the last plan

    def _add_rep(self, r: Rep) -> None:
        self.reps[id(r)] = r
        self.by_demand.setdefault(r.demand, []).append(r)
        if self.capture is not None:
            self.capture.append(r)
    def _remove_rep(self, r: Rep) -> None:
        del self.reps[id(r)]
        self.by_demand[r.demand].remove(r)
    def _reindex(self) -> None:
        self.slot_index = {}
        self.mig_hosts = {}
        for r in self.reps.values():
            if len(r.gpus) == 1:
                order = r.gpus[0].order
                if order not in self.slot_index and r.shape.kind is ShapeKind.MIG and not r.fixed:
                    self.mig_hosts.setdefault(r.shape.product, []).append(order)
                self.slot_index.setdefault(order, []).append(r)
    def _reps_on(self, slot: GpuSlot) -> list[Rep]:
        return [r for r in self.slot_index.get(slot.order, ()) if r.gpus and r.gpus[0] is slot and id(r) in self.reps]
    def _movable(self, r: Rep) -> bool:
        """Whether the cost repairs may move ``r``: BinPack and Spread replicas stay where their
        strategy put them (the repairs only optimise dollars)."""
        return self.demands[r.demand].strategy is Strategy.COST
    def _may_use_spot(self, r: Rep) -> bool:
        """Whether moving ``r`` onto spot keeps its model's promised replicas off spot."""
        d = self.demands[r.demand]
        if not d.allow_spot:
            return False
        if d.min_off_spot == 0 or r.node.spec.price_tier is PriceTier.SPOT:
            return True
        others = sum(1 for x in self.by_demand.get(r.demand, ())
                     if x is not r and x.node.spec.price_tier is not PriceTier.SPOT)
        return others >= d.min_off_spot
    def _group_may_use_spot(self, reps: list[Rep]) -> bool:
        """Whether all of ``reps`` may move onto spot together (see :meth:`_may_use_spot`)."""
        ids = {id(r) for r in reps}
        for i in sorted({r.demand for r in reps}):
            d = self.demands[i]
            if not d.allow_spot:
                return False
            off = sum(1 for x in self.by_demand.get(i, ())
                      if id(x) not in ids and x.node.spec.price_tier is not PriceTier.SPOT)
            if off < d.min_off_spot:
                return False
        return True
    def _size_key(self, i: int) -> tuple[bool, float, float, int, str]:
        """First-fit-decreasing order in two phases.

        Models whose cheapest home is a GPU (or a slice) go first, largest amortised footprint
        first; models for which CPU cores are cheaper than any GPU share go last, so they take
        spare room left on GPUs for free and otherwise CPU, instead of crowding out models that
        have no alternative.
        """
        d = self.demands[i]
        gpu = [p for c in self.cands[i] if c.shape.kind is not ShapeKind.CPU
               for p in [self._static_price(i, c)] if p is not None]
        cpu = [p for c in self.cands[i] if c.shape.kind is ShapeKind.CPU
               for p in [self._static_price(i, c)] if p is not None]
        gpu_cost = min(gpu) if gpu else float("inf")
        cpu_cost = min(cpu) if cpu else float("inf")
        flexible = cpu_cost < gpu_cost and self.variant.order in ("two-phase", "constrained")
        size = gpu_cost if gpu else cpu_cost
        if self.variant.order == "price":
            size = min(gpu_cost, cpu_cost)
        if self.variant.order.startswith("shuffle-"):
            digest = hashlib.blake2b(f"{self.variant.order}/{d.key}".encode(), digest_size=6).digest()
            return (flexible, float(int.from_bytes(digest, "big")), 0.0, 0, d.key)
        if self.variant.order == "constrained":
            # Fewest places to go first (taints, spot, products narrow them), then the largest.
            reach = sum(g.size for p in {c.shape.product for c in self.cands[i] if c.shape.product}
                        for g in self._groups(i, p, mig_only=False))
            return (flexible, float(reach), -(size if size != float("inf") else 0.0), -d.tensor_parallel, d.key)
        return (flexible, 0.0, -(size if size != float("inf") else 0.0), -d.tensor_parallel, d.key)
    def _static_price(self, i: int, cand: Candidate) -> float | None:
        shape = cand.shape
        if shape.kind is ShapeKind.CPU:
            return self.snapshot.cpu_price * shape.cpu_millis / 1000
        groups = self._groups(i, shape.product, mig_only=shape.kind is ShapeKind.MIG)
        if not groups:
            return None
        price = min(g.key[1] for g in groups)
        return price * self._units(shape)
    def _units(self, shape: Shape) -> float:
        return units(shape, self.options.slice_pricing)
    def _spot_ok(self, i: int) -> bool:
        return self.demands[i].allow_spot and not self.no_spot
    def _admit(self, i: int, kind: ShapeKind) -> dict[Taints, int]:
        """The node taint sets model ``i``'s pods of ``kind`` tolerate, each with its count of
        untolerated PreferNoSchedule taints (0 first in every ranking that breaks ties by it)."""
        tols = self.demands[i].tolerations_for(kind)
        memo: dict[tuple[Any, ...], dict[Taints, int]] = self.__dict__.setdefault("_admit_memo", {})
        got = memo.get(tols)
        if got is None:
            got = memo[tols] = {t: a for t in self.state.taint_sets if (a := admission(tols, t)) is not None}
        return got
    def _groups(self, i: int, product: str, mig_only: bool) -> list[Group]:
        spot_ok = self._spot_ok(i)
        admit = self._admit(i, ShapeKind.GPU)
        return [
            g for g in self.state.groups_by_product.get(product, [])
            if (spot_ok or not g.key[2]) and (g.key[3] or not mig_only) and g.key[4] in admit
        ]
    def _rep_cost(self, r: Rep) -> float:
        if r.shape.kind is ShapeKind.CPU:
            return self.snapshot.cpu_price * r.shape.cpu_millis / 1000
        price = r.gpus[0].price if r.gpus else 0.0
        return price * self._units(r.shape)


@functools.cache
def units(shape: Shape, pricing: SlicePricing = SlicePricing.MAX_SHARE) -> float:
    """GPUs a shape occupies: whole GPUs, or a slice's share of its GPU under ``pricing``."""
    if shape.kind is ShapeKind.GPU:
        return float(shape.gpus)
    if shape.kind is ShapeKind.CPU:
        return 0.0
    return slice_share(catalog.by_key(shape.product).profile(shape.profile), pricing)


def fields(r: Rep) -> tuple[Any, ...]:
    return (r.shape, r.node, list(r.gpus), r.start, r.pod, r.reason, r.fixed)


def restore(r: Rep, old: tuple[Any, ...]) -> None:
    r.shape, r.node, r.gpus, r.start, r.pod, r.reason, r.fixed = old[0], old[1], list(old[2]), *old[3:]


def group_sort(where: object) -> tuple[str, float, bool, bool, Taints]:
    if isinstance(where, Group):
        return where.key
    return ("", 0.0, False, False, ())


def free_in_current(slot: GpuSlot, prof: str) -> bool:
    """Whether the GPU's current layout has a ``prof`` instance the plan has not used yet."""
    if slot.current is None or slot.state is not GpuState.PLANNED:
        return False
    return sum(1 for name, _ in slot.current if name == prof) > slot.content.get(prof, 0)


def layout_rank(slot: GpuSlot, prof: str) -> tuple[int, int]:
    """Prefer GPUs whose current layout already has the most such instances (no re-layout), then any
    MIG-enabled GPU, then whole ones (enabling MIG)."""
    if slot.current is None:
        return (1, 0)
    return (0, -sum(1 for name, _ in slot.current if name == prof))
