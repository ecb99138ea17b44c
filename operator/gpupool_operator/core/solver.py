"""The placement heuristic: cost-ordered greedy packing with MIG layout building and repair moves.

A purely computational, deterministic function of (snapshot, demands, options). One cycle:

1. **Keep.** Running replicas whose shape is still accepted stay where they are (up to the wanted
   replica count, cheapest first); the rest are stopped with a reason.
2. **Place.** Models go largest first (first-fit decreasing by their cheapest shape's price). Each
   replica takes, in order of preference: spare room on a GPU this plan already pays for (zero
   marginal cost; best fit, so partly built MIG layouts fill up), else the shape with the lowest
   *amortised* price that has capacity: a whole GPU costs its price, a MIG instance the neutral
   share ``price x max(c/7, m/8)`` (the rest of that GPU is expected to fill), CPU its cores.
   Opening a MIG GPU prefers one whose current layout already holds the instance (no re-layout),
   and nodes are best-fit so whole free nodes stay available for tensor parallel replicas.
3. **Repair.** The amortised price is a bet that a GPU fills. Where it did not, a GPU is *closed*
   when its replicas fit into spare room elsewhere or onto CPU for less than the GPU's price (plus
   the move penalty for running replicas), and a MIG GPU is *downgraded* when its whole content
   fits on a cheaper free GPU. Each accepted move strictly lowers the cost, so this terminates.
4. **Lay out.** Each GPU's final MIG layout is the smallest change from its current one
   (:func:`gpupool_operator.core.mig.smallest_change`); instances get concrete start slots.

Replicas of one model are placed in batches (all that fit on the chosen GPU or node at once), so
a cycle is roughly linear in the number of models and GPUs touched, not replicas x GPUs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpupool_operator.core import catalog, mig
from gpupool_operator.core.cost import PriceTier
from gpupool_operator.core.demand import Candidate, Demand, Products, Shape, ShapeKind, candidates
from gpupool_operator.core.inventory import Holding, Snapshot
from gpupool_operator.core.plan import Assignment, Eviction, LayoutChange, Plan, Unplaced
from gpupool_operator.core.state import GpuSlot, GpuState, Group, NodeState, State

__all__ = ["LARGE_REPLICAS", "PORTFOLIO", "Options", "Planner", "Variant", "products_of", "solve"]

_EPS = 1e-9
_EJECT_HOSTS = 64  # GPUs examined per ejection attempt (bounds the repair work on large clusters)


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
    #: ``None``: 300, or 20 above :data:`LARGE_REPLICAS` replicas.
    lns_attempts: int | None = None
    #: GPUs the close pass tries to empty per pass, least filled first; ``None``: all of them, or
    #: 200 above :data:`LARGE_REPLICAS` replicas.
    close_attempts: int | None = None

    def resolved(self, replicas: int) -> Options:
        """These options with every ``None`` replaced by its size-dependent default."""
        large = replicas > LARGE_REPLICAS
        return dataclasses.replace(
            self,
            portfolio_size=self.portfolio_size if self.portfolio_size is not None else (1 if large else 4),
            lns_attempts=self.lns_attempts if self.lns_attempts is not None else (20 if large else 300),
            close_attempts=self.close_attempts if self.close_attempts is not None else (200 if large else 10**9),
        )


#: Above this many replicas per cycle, :class:`Options` defaults trade a little cost for speed.
LARGE_REPLICAS = 2000


@dataclass(frozen=True, slots=True)
class Variant:
    """One member of the solver portfolio: processing order and how a new GPU's price is spread."""

    order: str = "two-phase"  # "two-phase" (GPU-bound models first) or "price" (one FFD pass)
    amortize: str = "share"  # "share" (neutral slice share) or "self" (this model's replicas)


#: The portfolio :func:`solve` runs; the cheapest plan that places the most replicas wins.
PORTFOLIO = (Variant("two-phase", "share"), Variant("two-phase", "self"), Variant("price", "share"),
             Variant("price", "self"))


@dataclass(slots=True)
class _Rep:
    demand: int
    shape: Shape
    node: NodeState
    gpus: list[GpuSlot]
    start: int | None = None  # start slot when on a FIXED GPU
    pod: str | None = None  # running pod kept
    reason: str = ""
    #: True while the replica sits on a FIXED instance (start known) rather than a PLANNED layout
    fixed: bool = False


def products_of(snapshot: Snapshot) -> Products:
    known = sorted({n.product for n in snapshot.nodes if n.product and n.gpus})
    unknown: dict[str, int] = {}
    for n in snapshot.nodes:
        if n.gpus and not n.product:
            label = n.product_label or "unknown-gpu"
            unknown[label] = max(unknown.get(label, 0), n.gpu_memory_mib)
    return Products(tuple(known), tuple(sorted(unknown.items())))


class Planner:
    """Incremental planning over one snapshot: :meth:`plan` once, then :meth:`replan` per change.

    The full solve builds its working state (indexes over every GPU) and keeps it; a re-plan after
    one pool changes only touches that pool's replicas. The previous plan is taken as applied, so
    use it between full solves of a fresh snapshot (the operator re-solves fully whenever nodes or
    running pods change). Purely computational: it holds memory, not I/O.
    """

    def __init__(self, snapshot: Snapshot, options: Options | None = None) -> None:
        self.snapshot = snapshot
        self.options = options
        self._solver: _Solver | None = None

    def plan(self, demands: Sequence[Demand]) -> Plan:
        plan, self._solver = _solve(self.snapshot, demands, self.options)
        return plan

    def replan(self, demands: Sequence[Demand]) -> Plan:
        if self._solver is None:
            return self.plan(demands)
        return self._solver.update(demands)


def solve(snapshot: Snapshot, demands: Sequence[Demand], options: Options | None = None) -> Plan:
    """Place every replica of ``demands`` on ``snapshot`` at (close to) minimum dollars per hour.

    A small portfolio: the packing heuristic under each :data:`PORTFOLIO` variant, and (when
    nothing of ours runs yet, so no moves are at stake) the same greedy restricted to whole GPUs.
    The plan that places the most replicas wins, then the cheapest counting the move penalty,
    then the earlier variant (deterministic). The whole-GPU run guards the promise "never costlier
    than one whole GPU per replica" where packing bets on slices that never fill.
    """
    return _solve(snapshot, demands, options)[0]


def _solve(snapshot: Snapshot, demands: Sequence[Demand], options: Options | None) -> tuple[Plan, _Solver]:
    opts = (options or Options()).resolved(sum(max(0, d.replicas) for d in demands))
    variants = PORTFOLIO[: max(1, opts.portfolio_size or 1)] if opts.portfolio else PORTFOLIO[:1]
    best: tuple[int, float, int] | None = None
    chosen: tuple[Plan, _Solver] | None = None
    for n, variant in enumerate(variants):
        solver = _Solver(snapshot, demands, opts, variant=variant)
        plan = solver.run()
        key = (-len(plan.assignments), round(plan.cost_per_hour + opts.move_penalty * _moves(plan), 6), n)
        if best is None or key < best:
            best, chosen = key, (plan, solver)
    assert chosen is not None
    ours_running = any(h.owner is not None for n in snapshot.nodes for h in n.holdings)
    top = chosen[0]
    if opts.portfolio and not ours_running and top.assignments and not _whole_cannot_win(top, snapshot, demands):
        solver = _Solver(snapshot, demands, opts, whole_only=True)
        alt = solver.run()
        if len(alt.assignments) >= len(top.assignments) and alt.cost_per_hour < top.cost_per_hour - 1e-9:
            return alt, solver
    return chosen


def _whole_cannot_win(plan: Plan, snapshot: Snapshot, demands: Sequence[Demand]) -> bool:
    """A lower bound on the whole-GPU plan (each replica on its cheapest accepted whole GPU,
    capacity ignored) already exceeds ``plan``: no need to build it."""
    cheapest: dict[str, float] = {}
    for node in snapshot.nodes:
        if node.gpus:
            key = node.product or node.product_label
            cheapest[key] = min(cheapest.get(key, node.gpu_price), node.gpu_price)
    products = products_of(snapshot)
    bound = 0.0
    for d in demands:
        cands = candidates(d, products)[0]
        whole = [cheapest[c.shape.product] * c.shape.gpus for c in cands
                 if c.shape.kind is ShapeKind.GPU and c.shape.product in cheapest]
        if not whole:
            return False  # that model keeps its other shapes in the whole-GPU plan: no cheap bound
        bound += min(whole) * max(0, d.replicas)
    return bound >= plan.cost_per_hour


def _moves(plan: Plan) -> int:
    return sum(1 for e in plan.evictions if e.reason.startswith("moved"))


class _Solver:
    def __init__(
        self, snapshot: Snapshot, demands: Sequence[Demand], options: Options, whole_only: bool = False,
        variant: Variant | None = None,
    ) -> None:
        self.variant = variant or Variant()
        keys = [d.key for d in demands]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            raise ValueError(f"duplicate demand keys: {', '.join(dup)}")
        self.snapshot = snapshot
        self.demands = sorted(demands, key=lambda d: d.key)
        self.options = options
        products = products_of(snapshot)
        self.cands: list[tuple[Candidate, ...]] = []
        self.rejected: list[tuple[str, ...]] = []
        for d in self.demands:
            c, r = candidates(d, products)
            if whole_only and any(x.shape.kind is ShapeKind.GPU for x in c):
                c = tuple(x for x in c if x.shape.kind is ShapeKind.GPU)
            self.cands.append(c)
            self.rejected.append(r)
        self.index = {d.key: i for i, d in enumerate(self.demands)}
        self.reps: dict[int, _Rep] = {}  # insertion-ordered set of placed replicas, by id()
        self.capture: list[_Rep] | None = None  # collects replicas added while set
        self.slot_index: dict[int, list[_Rep]] = {}  # GPU order -> replicas, rebuilt per repair pass
        self.mig_hosts: dict[str, list[int]] = {}  # product -> GPUs with planned MIG replicas
        self.evictions: list[Eviction] = []
        self.unplaced: dict[int, int] = {}
        self.no_spot = False  # set while placing the replicas a model must keep off spot
        self.eject_budget = 10 * (options.lns_attempts or 0)
        self.by_demand: dict[int, list[_Rep]] = {}
        self.final_layout: dict[int, mig.Placement] = {}  # GPU order -> layout in the last plan
        self.products = products
        self.state: State

    # ------------------------------------------------------------------------------ phases
    def run(self) -> Plan:
        keep = self._choose_kept()
        self.state = State.from_snapshot(self.snapshot, keep=set(keep))
        self._materialise_kept(keep)
        todo = [max(0, d.replicas - len(self.by_demand.get(i, ()))) for i, d in enumerate(self.demands)]
        for i in sorted(range(len(self.demands)), key=self._size_key):
            if todo[i]:
                left = self._place_demand(i, todo[i])
                if left:
                    self.unplaced[i] = left
        if self.options.improve and self.unplaced:
            self._count_repair()
        if self.options.improve:
            budget = [self.options.lns_attempts or 0]
            for _ in range(4 if (self.options.close_attempts or 0) > 10**6 else 2):
                changed = self._close_pass()
                changed |= self._downgrade_pass()
                changed |= self._lns_pass(budget)
                if not changed:
                    break
        return self._finish()

    def update(self, demands: Sequence[Demand]) -> Plan:
        """Re-plan after demands changed, on top of the last plan (taken as applied).

        Replicas of unchanged models stay exactly where they are; a model whose replica count
        changed gains replicas (placed by the same greedy rules) or loses its most expensive ones;
        a model whose requirements changed is re-placed; a removed model frees its capacity. No
        repair moves run, so the work is proportional to the change, plus writing the plan out.
        """
        self.evictions = []
        for slot in self.state.gpus:  # the last plan is now the cluster's layout
            if slot.order in self.final_layout:
                slot.current = self.final_layout[slot.order]
            elif slot.state is GpuState.WHOLE and slot.ours and slot.current is not None:
                slot.current = None
        self.final_layout = {}
        wanted = {d.key: d for d in demands}
        todo: dict[int, int] = {}
        for key in sorted(set(self.index) | set(wanted)):
            d = wanted.get(key)
            i = self.index.get(key)
            if i is None:
                assert d is not None
                i = len(self.demands)
                self.demands.append(d)
                c, r = candidates(d, self.products)
                self.cands.append(c)
                self.rejected.append(r)
                self.index[key] = i
            old = self.demands[i]
            new = d if d is not None else dataclasses.replace(old, replicas=0)
            if new != old and dataclasses.replace(new, replicas=old.replicas) != old:
                self._drop(i, len(self.by_demand.get(i, ())), "its requirements changed")
                self.demands[i] = new
                self.cands[i], self.rejected[i] = candidates(new, self.products)
            self.demands[i] = new
            have = len(self.by_demand.get(i, ()))
            if have > new.replicas:
                self._drop(i, have - new.replicas, "scaled down")
            elif have < new.replicas:
                todo[i] = new.replicas - have
            self.unplaced.pop(i, None)
        for i in sorted(todo, key=self._size_key):
            left = self._place_demand(i, todo[i])
            if left:
                self.unplaced[i] = left
        return self._finish()

    def _drop(self, i: int, k: int, why: str) -> None:
        """Remove ``k`` replicas of model ``i``: plan-only ones first, the most expensive first."""
        reps = sorted(self.by_demand.get(i, ()), key=lambda r: (r.pod is not None, -self._rep_cost(r), r.node.name))
        for r in reps[:k]:
            if r.pod is not None:
                self.evictions.append(Eviction(r.pod, r.node.name, self.demands[i].key, why))
            self._detach(r)
            self._remove_rep(r)

    def _add_rep(self, r: _Rep) -> None:
        self.reps[id(r)] = r
        self.by_demand.setdefault(r.demand, []).append(r)
        if self.capture is not None:
            self.capture.append(r)

    def _remove_rep(self, r: _Rep) -> None:
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

    def _reps_on(self, slot: GpuSlot) -> list[_Rep]:
        return [r for r in self.slot_index.get(slot.order, ()) if r.gpus and r.gpus[0] is slot and id(r) in self.reps]

    def _may_use_spot(self, r: _Rep) -> bool:
        """Whether moving ``r`` onto spot keeps its model's promised replicas off spot."""
        d = self.demands[r.demand]
        if not d.allow_spot:
            return False
        if d.min_off_spot == 0 or r.node.spec.price_tier is PriceTier.SPOT:
            return True
        others = sum(1 for x in self.by_demand.get(r.demand, ())
                     if x is not r and x.node.spec.price_tier is not PriceTier.SPOT)
        return others >= d.min_off_spot

    def _group_may_use_spot(self, reps: list[_Rep]) -> bool:
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

    def _place_demand(self, i: int, n: int) -> int:
        """Place ``n`` more replicas of model ``i``, first the ones it must keep off spot."""
        d = self.demands[i]
        off = sum(1 for r in self.by_demand.get(i, ()) if r.node.spec.price_tier is not PriceTier.SPOT)
        first = min(n, max(0, d.min_off_spot - off)) if d.allow_spot else 0
        left = 0
        if first:
            self.no_spot = True
            left = self._place(i, first)
            self.no_spot = False
        return left + (self._place(i, n - first) if not left else n - first)

    def _size_key(self, i: int) -> tuple[bool, float, int, str]:
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
        flexible = cpu_cost < gpu_cost and self.variant.order == "two-phase"
        size = gpu_cost if gpu else cpu_cost
        if self.variant.order != "two-phase":
            size = min(gpu_cost, cpu_cost)
        return (flexible, -(size if size != float("inf") else 0.0), -d.tensor_parallel, d.key)

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
        return _units(shape)

    def _spot_ok(self, i: int) -> bool:
        return self.demands[i].allow_spot and not self.no_spot

    def _groups(self, i: int, product: str, mig_only: bool) -> list[Group]:
        spot_ok = self._spot_ok(i)
        return [
            g for g in self.state.groups_by_product.get(product, [])
            if (spot_ok or not g.key[2]) and (g.key[3] or not mig_only)
        ]

    # ------------------------------------------------------------------------------ keep
    def _choose_kept(self) -> list[str]:
        running: dict[int, list[tuple[float, str, str, Shape]]] = {}
        for node in self.snapshot.nodes:
            for h in node.holdings:
                if h.owner is None:
                    continue
                i = self.index.get(h.owner)
                shape = _holding_shape(node.product or node.product_label, h)
                cost = _holding_cost(node.gpu_price, self.snapshot.cpu_price, shape)
                if i is None:
                    self.evictions.append(Eviction(h.pod, node.name, h.owner, "its model is no longer declared"))
                    continue
                ok = any(_same_shape(c.shape, shape) for c in self.cands[i])
                if not ok:
                    self.evictions.append(Eviction(
                        h.pod, node.name, h.owner, f"{shape.describe()} no longer meets the model's requirements"
                    ))
                    continue
                if node.price_tier is PriceTier.SPOT and not self.demands[i].allow_spot:
                    self.evictions.append(Eviction(h.pod, node.name, h.owner, "the pool no longer allows spot nodes"))
                    continue
                running.setdefault(i, []).append((cost, h.pod, node.name, shape))
        keep: list[str] = []
        for i, items in sorted(running.items()):
            items.sort()
            want = self.demands[i].replicas
            for cost, pod, node_name, _shape in items[:want]:
                del cost, node_name
                keep.append(pod)
            for _cost, pod, node_name, _shape in items[want:]:
                self.evictions.append(Eviction(pod, node_name, self.demands[i].key, "scaled down"))
        return keep

    def _materialise_kept(self, keep: list[str]) -> None:
        kept = set(keep)
        for node in self.state.nodes:
            by_index = {s.index: s for s in node.gpus}
            for h in node.spec.holdings:
                if h.pod not in kept or h.owner is None:
                    continue
                shape = _holding_shape(node.spec.product or node.spec.product_label, h)
                rep = _Rep(self.index[h.owner], shape, node, [], pod=h.pod,
                           reason="kept where it runs: its shape is still accepted")
                if h.instance is not None:
                    rep.gpus = [by_index[h.instance[0]]]
                    rep.start = h.instance[2]
                    rep.fixed = True
                else:
                    rep.gpus = [by_index[g] for g in h.gpus if g in by_index]
                self._add_rep(rep)

    # ------------------------------------------------------------------------------ place
    def _place(self, i: int, n: int) -> int:
        spot_ok = self._spot_ok(i)
        spots = (False, True) if spot_ok else (False,)
        mig_cands = [c for c in self.cands[i] if c.shape.kind is ShapeKind.MIG]
        mig_cands.sort(key=lambda c: (self._units(c.shape), c.shape))
        static = self._static_options(i, n)
        while n > 0:
            if self.variant.amortize == "self":
                static = self._static_options(i, n)
            # 1. spare room on a GPU this plan already pays for: zero marginal cost.
            room = self._best_room(mig_cands, spots, exclude=None)
            if room is not None:
                n -= self._fill_room(i, room[1], room[2], n, reason_zero=True)
                continue
            # 2. the cheapest amortised option with capacity.
            best: tuple[float, int, str, object, Candidate] | None = None
            for price, tie, kind, where, cand in static:
                if best is not None and price > best[0] + _EPS:
                    break
                if kind == "whole":
                    assert isinstance(where, Group)
                    if where.best_fit(cand.shape.gpus) is not None:
                        best = (price, tie, kind, where, cand)
                        break
                elif kind == "mig":
                    assert isinstance(where, Group)
                    if where.best_fit(1) is not None:
                        best = (price, tie, kind, where, cand)
                        break
                elif kind == "cpu" and next(
                    self.state.cpu_fit(cand.shape.cpu_millis, cand.shape.memory_mib, spot_ok), None
                ):
                    best = (price, tie, kind, None, cand)
                    break
            fixed_new = self._best_fixed_uncharged(mig_cands, spots)
            if fixed_new is not None and (best is None or fixed_new[0] < best[0] - _EPS):
                n -= self._fill_room(i, fixed_new[1], fixed_new[2], n, reason_zero=False)
                continue
            if best is None:
                break
            price, _tie, kind, where, cand = best
            if kind == "whole":
                assert isinstance(where, Group)
                n -= self._open_whole(i, where, cand, n, price)
            elif kind == "mig":
                assert isinstance(where, Group)
                n -= self._open_mig(i, where, cand, n, price)
            else:
                n -= self._place_cpu(i, cand, n, price)
        return n

    def _static_options(self, i: int, n: int) -> list[tuple[float, int, str, object, Candidate]]:
        """Opening options, cheapest first. Under ``amortize="self"`` a new MIG GPU is charged to the
        replicas of this model that will fill it (price / min(room, n)); under ``"share"`` to the
        slice's neutral share (the rest of the GPU is expected to fill with other models)."""
        own = self.variant.amortize == "self"
        out: list[tuple[float, int, str, object, Candidate]] = []
        for ci, cand in enumerate(self.cands[i]):
            shape = cand.shape
            if shape.kind is ShapeKind.CPU:
                out.append((self.snapshot.cpu_price * shape.cpu_millis / 1000, ci, "cpu", None, cand))
                continue
            is_mig = shape.kind is ShapeKind.MIG
            per = self._units(shape)
            if own and is_mig:
                per = 1.0 / max(1, min(n, mig.room_for(shape.product, (), shape.profile)))
            for g in self._groups(i, shape.product, mig_only=is_mig):
                out.append((g.key[1] * per, ci, "mig" if is_mig else "whole", g, cand))
        out.sort(key=lambda o: (o[0], o[2] != "cpu", o[1], _group_sort(o[3])))
        return out

    def _best_room(
        self, mig_cands: list[Candidate], spots: tuple[bool, ...], exclude: GpuSlot | None
    ) -> tuple[float, GpuSlot, Candidate] | None:
        best: tuple[float, GpuSlot, Candidate] | None = None
        for cand in mig_cands:  # ascending units: stop once no later candidate can win
            if best is not None and self._units(cand.shape) > best[0] + 0.05:
                break
            prof = cand.shape.profile
            for spot in sorted(spots, reverse=True):  # spot rooms first: on-demand ones suit more models
                for slot in (
                    self.state.room(cand.shape.product, spot, prof),
                    self.state.fixed_room(cand.shape.product, spot, prof, charged=True),
                ):
                    if slot is None or slot is exclude:
                        continue
                    # Zero marginal cost either way: use the least capacity, then a spot GPU's room
                    # (on-demand rooms can take any model), then the cheaper GPU.
                    score = (self._units(cand.shape) + (1e-2 if not slot.spot else 0.0)
                             + 1e-4 * slot.price * self._units(cand.shape))
                    if _free_in_current(slot, prof):
                        score -= 0.1  # an instance the GPU already has: no MIG reconfiguration
                    if best is None or (score, slot.order) < (best[0], best[1].order):
                        best = (score, slot, cand)
        return best

    def _best_fixed_uncharged(
        self, mig_cands: list[Candidate], spots: tuple[bool, ...]
    ) -> tuple[float, GpuSlot, Candidate] | None:
        best: tuple[float, GpuSlot, Candidate] | None = None
        for cand in mig_cands:
            for spot in spots:
                slot = self.state.fixed_room(cand.shape.product, spot, cand.shape.profile, charged=False)
                if slot is None:
                    continue
                score = slot.price * self._units(cand.shape)
                if best is None or (score, slot.order) < (best[0], best[1].order):
                    best = (score, slot, cand)
        return best

    def _fill_room(self, i: int, slot: GpuSlot, cand: Candidate, n: int, reason_zero: bool) -> int:
        prof = cand.shape.profile
        share = slot.price * self._units(cand.shape)
        if reason_zero:
            why = f"{cand.shape.describe()} (${share:.2f}/h share) in spare room of a GPU already in use"
        else:
            why = f"{cand.shape.describe()} at ${share:.2f}/h: a free instance of an existing layout"
        if slot.state is GpuState.FIXED:
            k = min(n, len(slot.fixed_free[prof]))
            for _ in range(k):
                start = self.state.take_fixed(slot, prof)
                self._add_rep(_Rep(i, cand.shape, slot.node, [slot], start=start, reason=why, fixed=True))
            return k
        k = min(n, mig.room_for(slot.product, slot.key, prof))
        self.state.add_content(slot, prof, k)
        for _ in range(k):
            self._add_rep(_Rep(i, cand.shape, slot.node, [slot], reason=why))
        return k

    def _open_mig(self, i: int, group: Group, cand: Candidate, n: int, price: float) -> int:
        node = group.best_fit(1)
        assert node is not None
        prof = cand.shape.profile
        slots = [node.gpus[j] for j in node.free]
        slot = min(slots, key=lambda s: (_layout_rank(s, prof), s.index))
        self.state.take_free(node, slot)
        slot.state = GpuState.PLANNED
        k = min(n, mig.room_for(slot.product, (), prof))
        self.state.add_content(slot, prof, k)
        why = f"cheapest accepted shape with capacity: {cand.shape.describe()} at ${price:.2f}/h share"
        for _ in range(k):
            self._add_rep(_Rep(i, cand.shape, node, [slot], reason=why))
        return k

    def _open_whole(self, i: int, group: Group, cand: Candidate, n: int, price: float) -> int:
        t = cand.shape.gpus
        node = group.best_fit(t)
        assert node is not None
        k = min(n, len(node.free) // t)
        order = sorted((node.gpus[j] for j in node.free), key=lambda s: (s.current is not None, s.index))
        why = f"cheapest accepted shape with capacity: {cand.shape.describe()} at ${price:.2f}/h"
        for r in range(k):
            chosen = order[r * t:(r + 1) * t]
            for slot in chosen:
                self.state.take_free(node, slot)
                slot.state = GpuState.WHOLE
                slot.ours += 1
            self._add_rep(_Rep(i, cand.shape, node, sorted(chosen, key=lambda s: s.index), reason=why))
        return k

    def _place_cpu(self, i: int, cand: Candidate, n: int, price: float) -> int:
        shape = cand.shape
        node = next(self.state.cpu_fit(shape.cpu_millis, shape.memory_mib, self._spot_ok(i)))
        k = n
        if shape.cpu_millis:
            k = min(k, node.cpu_free // shape.cpu_millis)
        if shape.memory_mib:
            k = min(k, node.mem_free // shape.memory_mib)
        k = max(1, k)
        node.cpu_free -= k * shape.cpu_millis
        node.mem_free -= k * shape.memory_mib
        why = f"cheapest accepted shape with capacity: {shape.describe()} at ${price:.2f}/h"
        for _ in range(k):
            self._add_rep(_Rep(i, shape, node, [], reason=why))
        return k

    # ------------------------------------------------------------------------------ repair
    def _units_on(self) -> dict[int, list[_Rep]]:
        on: dict[int, list[_Rep]] = {}
        for r in self.reps.values():
            if r.shape.kind is ShapeKind.MIG or (r.shape.kind is ShapeKind.GPU and r.shape.gpus == 1):
                on.setdefault(r.gpus[0].order, []).append(r)
        return on

    def _close_pass(self) -> bool:
        """Close GPUs whose replicas fit elsewhere (spare room, CPU) for less than the GPU costs."""
        changed = False
        self._reindex()
        on = self._units_on()
        slots = {s.order: s for s in self.state.gpus}
        order = sorted(on, key=lambda o: (self._fill_of(on[o]), o))
        attempts = self.options.close_attempts if self.options.close_attempts is not None else len(order)
        for o in order:
            slot = slots[o]
            reps = [r for r in on[o] if r.gpus and r.gpus[0] is slot]
            if not reps or slot.state not in (GpuState.PLANNED, GpuState.WHOLE, GpuState.FIXED):
                continue
            if slot.ours != len(reps):
                continue  # shares its GPU with replicas of ours we do not move (tensor parallel)
            if attempts <= 0:
                break
            attempts -= 1
            if self._try_close(slot, reps):
                changed = True
        return changed

    def _fill_of(self, reps: list[_Rep]) -> float:
        return sum(self._units(r.shape) for r in reps)

    def _try_close(self, slot: GpuSlot, reps: list[_Rep]) -> bool:
        saved = slot.price
        penalty = self.options.move_penalty * sum(1 for r in reps if r.pod is not None)
        # Every replica this attempt touches, with its placement before, for an exact rollback.
        affected: list[tuple[_Rep, tuple[Any, ...]]] = [(r, _fields(r)) for r in reps]
        for r in reps:  # detach everything first so the source cannot be its own target
            self._detach(r)
        cost = penalty
        ok = True
        relocated: list[_Rep] = []
        for r in sorted(reps, key=lambda r: (-self._units(r.shape), r.demand)):
            moved = self._relocate(r, budget=saved - cost)
            if moved is None:
                moved = self._eject_into(r, saved - cost, slot, affected)
            if moved is None:
                ok = False
                break
            relocated.append(r)
            cost += moved
            if cost >= saved - 1e-6:
                ok = False
                break
        if ok and cost < saved - 1e-6:
            for r in reps:
                if r.pod is not None:
                    self.evictions.append(Eviction(r.pod, slot.node.name, self.demands[r.demand].key,
                                                   "moved: its GPU is freed to save money"))
                    r.pod = None
            return True
        # Roll back: detach what moved (relocated replicas, ejected ones), restore, re-attach all.
        for r in relocated:
            self._detach(r)
        for r, _ in affected[len(reps):]:
            self._detach(r)
        for r, old in affected:
            _restore(r, old)
        for r, _ in affected:
            self._attach(r)
        return False

    def _eject_into(
        self, r: _Rep, budget: float, source: GpuSlot, affected: list[tuple[_Rep, tuple[Any, ...]]]
    ) -> float | None:
        """Put ``r`` where another replica sits, moving that one to spare room or CPU (one-step
        ejection chain). Returns the cost of the move, or ``None`` (nothing changed)."""
        if self.eject_budget <= 0:
            return None
        spot_ok = self._may_use_spot(r)
        mig_cands = sorted((c for c in self.cands[r.demand] if c.shape.kind is ShapeKind.MIG),
                           key=lambda c: (self._units(c.shape), c.shape))
        if not mig_cands:
            return None
        products = {c.shape.product for c in mig_cands}
        hosts: dict[int, list[_Rep]] = {}
        busy = {id(x) for x, _ in affected}
        for product in sorted(products):
            for order in self.mig_hosts.get(product, ())[:_EJECT_HOSTS]:
                for other in self.slot_index.get(order, ()):
                    if (id(other) not in busy and id(other) in self.reps and other.pod is None
                            and other.shape.kind is ShapeKind.MIG and not other.fixed and other.gpus
                            and other.gpus[0].order == order and other.gpus[0] is not source):
                        hosts.setdefault(order, []).append(other)
        for order in sorted(hosts):
            victims = hosts[order]
            g = victims[0].gpus[0]
            if g.state is not GpuState.PLANNED or (g.spot and not spot_ok):
                continue
            for victim in sorted(victims, key=lambda v: (self._units(v.shape), v.demand)):
                if self.eject_budget <= 0:
                    return None
                base = dict(g.key)
                base[victim.shape.profile] -= 1
                key = mig.counts_key(base)
                fit = next((c for c in mig_cands if c.shape.product == g.product
                            and mig.add(g.product, key, c.shape.profile) is not None), None)
                if fit is None:
                    continue
                self.eject_budget -= 1
                affected.append((victim, _fields(victim)))
                self._detach(victim)
                if g.state in (GpuState.FREE,):  # the victim was alone on it (detach freed it): keep it
                    self.state.take_free(g.node, g)
                    g.state = GpuState.PLANNED
                self.state.add_content(g, fit.shape.profile)
                r.shape, r.node, r.gpus, r.start, r.fixed = fit.shape, g.node, [g], None, False
                r.reason = f"{fit.shape.describe()} in spare room of a GPU already in use (packed to free a GPU)"
                extra = self._relocate(victim, budget)
                if extra is not None:
                    return extra
                self.state.remove_content(g, fit.shape.profile)
                r.gpus = []
                _restore(victim, affected.pop()[1])
                self._attach(victim)
        return None

    def _attach(self, r: _Rep) -> None:
        """Re-apply ``r``'s recorded placement to the state (inverse of :meth:`_detach`)."""
        st = self.state
        if r.shape.kind is ShapeKind.CPU:
            r.node.cpu_free -= r.shape.cpu_millis
            r.node.mem_free -= r.shape.memory_mib
            return
        for slot in r.gpus:
            if r.shape.kind is ShapeKind.GPU:
                if slot.state is GpuState.FREE:
                    st.take_free(slot.node, slot)
                    slot.state = GpuState.WHOLE
                slot.ours += 1
            elif r.fixed:
                assert r.start is not None
                slot.fixed_free[r.shape.profile].remove(r.start)
                slot.ours += 1
            else:
                if slot.state is GpuState.FREE:
                    st.take_free(slot.node, slot)
                    slot.state = GpuState.PLANNED
                st.add_content(slot, r.shape.profile)

    def _detach(self, r: _Rep) -> None:
        st = self.state
        if r.shape.kind is ShapeKind.CPU:
            r.node.cpu_free += r.shape.cpu_millis
            r.node.mem_free += r.shape.memory_mib
        elif r.shape.kind is ShapeKind.GPU:
            for slot in r.gpus:
                slot.ours -= 1
                if slot.ours == 0:
                    st.release_free(slot)
        elif r.fixed:
            assert r.start is not None
            st.return_fixed(r.gpus[0], r.shape.profile, r.start)
        else:
            st.remove_content(r.gpus[0], r.shape.profile)

    def _reattach(self, slot: GpuSlot, reps: list[_Rep]) -> None:
        st = self.state
        for r in reps:
            if r.shape.kind is ShapeKind.GPU:
                if slot.state is GpuState.FREE:
                    st.take_free(slot.node, slot)
                    slot.state = GpuState.WHOLE
                slot.ours += 1
            elif r.fixed:
                assert r.start is not None
                slot.fixed_free[r.shape.profile].remove(r.start)
                slot.ours += 1
            else:
                if slot.state is GpuState.FREE:
                    st.take_free(slot.node, slot)
                    slot.state = GpuState.PLANNED
                st.add_content(slot, r.shape.profile)

    def _relocate(self, r: _Rep, budget: float) -> float | None:
        """Move ``r`` to spare room (cost 0) or CPU (its price); ``None`` if neither fits."""
        i = r.demand
        spot_ok = self._may_use_spot(r)  # never breach min_off_spot
        spots = (False, True) if spot_ok else (False,)
        mig_cands = sorted((c for c in self.cands[i] if c.shape.kind is ShapeKind.MIG),
                           key=lambda c: (self._units(c.shape), c.shape))
        room = self._best_room(mig_cands, spots, exclude=None)
        if room is not None:
            _, slot, cand = room
            r.shape, r.node, r.gpus, r.pod = cand.shape, slot.node, [slot], r.pod
            if slot.state is GpuState.FIXED:
                r.start = self.state.take_fixed(slot, cand.shape.profile)
                r.fixed = True
            else:
                self.state.add_content(slot, cand.shape.profile)
                r.start, r.fixed = None, False
            r.reason = f"{cand.shape.describe()} in spare room of a GPU already in use (packed to free a GPU)"
            return 0.0
        for cand in self.cands[i]:
            if cand.shape.kind is not ShapeKind.CPU:
                continue
            price = self.snapshot.cpu_price * cand.shape.cpu_millis / 1000
            if price >= budget:
                continue
            node = next(self.state.cpu_fit(cand.shape.cpu_millis, cand.shape.memory_mib, spot_ok), None)
            if node is None:
                continue
            opened = self._open_for(r, min(budget, price), spot_ok)
            if opened is not None:
                return opened
            node.cpu_free -= cand.shape.cpu_millis
            node.mem_free -= cand.shape.memory_mib
            r.shape, r.node, r.gpus, r.start, r.fixed = cand.shape, node, [], None, False
            r.reason = f"{cand.shape.describe()} at ${price:.2f}/h: cheaper than keeping a GPU for it"
            return price
        return self._open_for(r, budget, spot_ok)

    def _open_for(self, r: _Rep, budget: float, spot_ok: bool) -> float | None:
        """Last resort of a move: a fresh GPU (MIG slice or whole) cheaper than ``budget``."""
        best: tuple[float, int, Group, Candidate] | None = None
        for ci, cand in enumerate(self.cands[r.demand]):
            shape = cand.shape
            if shape.kind is ShapeKind.CPU or (shape.kind is ShapeKind.GPU and shape.gpus != 1):
                continue
            is_mig = shape.kind is ShapeKind.MIG
            for g in self.state.groups_by_product.get(shape.product, []):
                if (g.key[2] and not spot_ok) or (is_mig and not g.key[3]) or g.key[1] >= budget - 1e-9:
                    continue
                if best is not None and (g.key[1], ci) >= (best[0], best[1]):
                    continue
                if g.best_fit(1) is not None:
                    best = (g.key[1], ci, g, cand)
        if best is None:
            return None
        price, _ci, g, cand = best
        node = g.best_fit(1)
        assert node is not None
        slots = [node.gpus[j] for j in node.free]
        if cand.shape.kind is ShapeKind.MIG:
            slot = min(slots, key=lambda s: (_layout_rank(s, cand.shape.profile), s.index))
            self.state.take_free(node, slot)
            slot.state = GpuState.PLANNED
            self.state.add_content(slot, cand.shape.profile)
        else:
            slot = min(slots, key=lambda s: (s.current is not None, s.index))
            self.state.take_free(node, slot)
            slot.state = GpuState.WHOLE
            slot.ours += 1
        r.shape, r.node, r.gpus, r.start, r.fixed = cand.shape, node, [slot], None, False
        r.reason = f"{cand.shape.describe()}: moved to a cheaper GPU (${price:.2f}/h)"
        return price

    def _count_repair(self) -> None:
        """Place more replicas: take out one big replica (tensor parallel or whole GPU) and keep
        the change if the unplaced models, smallest first, and then that replica again, place more
        replicas than were taken out. Each accepted swap strictly raises the count placed."""
        attempts = max(1, (self.options.lns_attempts or 0) // 6)
        big = sorted(
            (r for r in self.reps.values() if r.pod is None and r.shape.kind is ShapeKind.GPU),
            key=lambda r: (-len(r.gpus) * r.gpus[0].price, r.node.order, r.gpus[0].index),
        )
        for victim in big:
            if not self.unplaced or attempts <= 0:
                return
            if id(victim) not in self.reps:
                continue
            attempts -= 1
            saved = _fields(victim)
            self._detach(victim)
            self._remove_rep(victim)
            self.capture = []
            todo = dict(self.unplaced)
            todo[victim.demand] = todo.get(victim.demand, 0) + 1
            for i in sorted(todo, key=lambda i: (-self._size_key(i)[1], self.demands[i].key)):
                self._place_demand(i, todo[i])
            new, self.capture = self.capture, None
            if len(new) > 1:
                placed: dict[int, int] = {}
                for r in new:
                    placed[r.demand] = placed.get(r.demand, 0) + 1
                for i, n in todo.items():
                    left = n - placed.get(i, 0)
                    if left > 0:
                        self.unplaced[i] = left
                    else:
                        self.unplaced.pop(i, None)
                continue
            for r in new:
                self._detach(r)
                self._remove_rep(r)
            _restore(victim, saved)
            self._attach(victim)
            self._add_rep(victim)

    def _lns_pass(self, budget: list[int]) -> bool:
        """Ruin and recreate: empty the least-filled GPUs (alone, then in pairs), re-place their
        replicas with the same greedy rules, keep the result only when it is strictly cheaper.
        Deterministic: GPUs are tried in (fill, order) order, and each try is undone exactly."""
        changed = False
        self._reindex()
        on = self._units_on()
        slots = {sl.order: sl for sl in self.state.gpus}
        units = sorted(
            (o for o, reps in on.items()
             if all(r.pod is None for r in reps) and slots[o].state in (GpuState.PLANNED, GpuState.WHOLE)
             and slots[o].ours == len(reps)),
            key=lambda o: (self._fill_of(on[o]), o),
        )
        done: set[int] = set()
        for pos, o in enumerate(units):
            if budget[0] <= 0:
                break
            if o in done:
                continue
            partners: list[int | None] = [None, *[u for u in units[pos + 1:pos + 4] if u not in done]]
            for other in partners:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
                group = [slots[o]] + ([slots[other]] if other is not None else [])
                if self._ruin_recreate(group):
                    changed = True
                    done.update(sl.order for sl in group)
                    break
        return changed

    def _ruin_recreate(self, group: list[GpuSlot]) -> bool:
        ids = {id(sl) for sl in group}
        victims = [r for sl in group for r in self._reps_on(sl)]
        victims = list({id(r): r for r in victims if any(id(g) in ids for g in r.gpus)}.values())
        if not victims or any(r.pod is not None or len(r.gpus) > 1 for r in victims):
            return False
        before = {id(sl): sl.ours for sl in group}
        saved = [(r, (r.shape, r.node, list(r.gpus), r.start, r.pod, r.reason, r.fixed)) for r in victims]
        victim_ids = {id(r) for r in victims}
        for r in victims:
            self._detach(r)
        del victim_ids
        for r in victims:
            self._remove_rep(r)
        mark = 0
        counts: dict[int, int] = {}
        for r in victims:
            counts[r.demand] = counts.get(r.demand, 0) + 1
        if self._recreate(counts, group, before, mark, reverse=False):
            return True
        if self._recreate(counts, group, before, mark, reverse=True):
            return True
        by_slot: dict[int, list[_Rep]] = {}
        for r, old in saved:
            r.shape, r.node, r.gpus, r.start, r.pod, r.reason, r.fixed = old
            by_slot.setdefault(id(r.gpus[0]), []).append(r)
        for reps in by_slot.values():
            self._reattach(reps[0].gpus[0], reps)
        for r in victims:
            self._add_rep(r)
        return False

    def _recreate(
        self, counts: dict[int, int], group: list[GpuSlot], before: dict[int, int], mark: int, reverse: bool
    ) -> bool:
        """Re-place the ruined replicas (largest first, or smallest first); keep if cheaper."""
        ok = True
        self.capture = []
        for i in sorted(counts, key=self._size_key, reverse=reverse):
            if self._place_demand(i, counts[i]):
                ok = False
                break
        new, self.capture = self.capture, None
        del mark
        delta = 0.0
        if ok:
            touched: dict[int, GpuSlot] = {id(sl): sl for sl in group}
            added: dict[int, int] = {}
            for r in new:
                for g in r.gpus:
                    touched[id(g)] = g
                    added[id(g)] = added.get(id(g), 0) + 1
                if r.shape.kind is ShapeKind.CPU:
                    delta += self.snapshot.cpu_price * r.shape.cpu_millis / 1000
            for key, sl in touched.items():
                was = before.get(key, sl.ours - added.get(key, 0))
                delta += sl.price * ((sl.ours > 0) - (was > 0))
        if ok and delta < -1e-6:
            return True
        for r in new:
            self._detach(r)
        for r in new:
            self._remove_rep(r)
        return False

    def _downgrade_pass(self) -> bool:
        """Move a MIG GPU's whole content to a cheaper free GPU where every replica still fits."""
        changed = False
        on = self._units_on()
        slots = {s.order: s for s in self.state.gpus}
        attempts = self.options.close_attempts if self.options.close_attempts is not None else len(on)
        for o in sorted(on, key=lambda o: (self._fill_of(on[o]), o)):
            slot = slots[o]
            reps = on[o]
            if slot.state is not GpuState.PLANNED or slot.ours != len(reps):
                continue
            if any(r.pod is not None for r in reps):
                continue
            if attempts <= 0:
                break
            attempts -= 1
            if self._try_downgrade(slot, reps):
                changed = True
        return changed

    def _try_downgrade(self, slot: GpuSlot, reps: list[_Rep]) -> bool:
        """Repack a MIG GPU onto a cheaper free GPU; replicas that do not fit there may spill to
        spare room or CPU, as long as the total is still cheaper than keeping this GPU."""
        spot_ok = self._group_may_use_spot(reps)
        targets = sorted(
            (g for g in self.state.groups.values()
             if g.key[3] and g.key[1] < slot.price - 1e-6 and (spot_ok or not g.key[2])),
            key=lambda g: (g.key[1], _group_sort(g)),
        )
        ordered = sorted(reps, key=lambda r: (-self._units(r.shape), r.demand))
        for g in targets:
            product = g.key[0]
            node = g.best_fit(1)
            if node is None:
                continue
            key: mig.Counts = ()
            packed: list[tuple[_Rep, Candidate]] = []
            spill: list[_Rep] = []
            for r in ordered:
                opts = sorted((c for c in self.cands[r.demand]
                               if c.shape.kind is ShapeKind.MIG and c.shape.product == product),
                              key=lambda c: (self._units(c.shape), c.shape))
                for c in opts:
                    nxt = mig.add(product, key, c.shape.profile)
                    if nxt is not None:
                        key = nxt
                        packed.append((r, c))
                        break
                else:
                    spill.append(r)
            if not packed:
                continue
            if self._move_content(slot, reps, node, packed, spill, g.key[1]):
                return True
        return False

    def _move_content(
        self, slot: GpuSlot, reps: list[_Rep], node: NodeState, packed: list[tuple[_Rep, Candidate]],
        spill: list[_Rep], price: float,
    ) -> bool:
        saved = [(r, (r.shape, r.node, list(r.gpus), r.start, r.pod, r.reason, r.fixed)) for r in reps]
        for r in reps:
            self._detach(r)
        target = min((node.gpus[j] for j in node.free), key=lambda s: (s.current is None, s.index))
        self.state.take_free(node, target)
        target.state = GpuState.PLANNED
        for r, c in packed:
            self.state.add_content(target, c.shape.profile)
            r.shape, r.node, r.gpus, r.start, r.fixed = c.shape, node, [target], None, False
            r.reason = f"{c.shape.describe()}: repacked onto a cheaper GPU (${price:.2f}/h)"
        cost = price
        moved: list[_Rep] = []
        ok = True
        for r in spill:
            extra = self._relocate(r, budget=slot.price - cost)
            if extra is None:
                ok = False
                break
            moved.append(r)
            cost += extra
        if ok and cost < slot.price - 1e-6:
            return True
        for r in moved:
            self._detach(r)
        for r, _c in packed:
            self.state.remove_content(target, r.shape.profile)
        for r, old in saved:
            r.shape, r.node, r.gpus, r.start, r.pod, r.reason, r.fixed = old
        self._reattach(slot, reps)
        return False

    # ------------------------------------------------------------------------------ finish
    def _finish(self) -> Plan:
        st = self.state
        changes: list[LayoutChange] = []
        starts: dict[int, dict[str, list[int]]] = {}
        for slot in st.gpus:
            if slot.state is GpuState.PLANNED and slot.content:
                product = catalog.by_key(slot.product)
                if slot.current is not None:
                    after = mig.smallest_change(product, slot.current, (), slot.content)
                else:
                    after = mig.place(product, slot.content)
                assert after is not None, (slot.product, slot.content)
                self.final_layout[slot.order] = after
                if slot.current is None or tuple(sorted(slot.current)) != tuple(sorted(after)):
                    changes.append(LayoutChange(slot.node.name, slot.index, slot.current, after))
                free: dict[str, list[int]] = {}
                for name, s in after:
                    free.setdefault(name, []).append(s)
                starts[slot.order] = free
            elif slot.state is GpuState.WHOLE and slot.ours and slot.current is not None:
                changes.append(LayoutChange(slot.node.name, slot.index, slot.current, None))
        assignments: list[Assignment] = []
        per_demand: dict[int, list[_Rep]] = {}
        for r in self.reps.values():
            per_demand.setdefault(r.demand, []).append(r)
        cost_by: dict[str, float] = {d.key: 0.0 for d in self.demands}
        for i in sorted(per_demand):
            d = self.demands[i]
            reps = sorted(per_demand[i], key=lambda r: (r.pod is None, r.pod or "", r.node.name,
                                                       [g.index for g in r.gpus], r.shape))
            for r in reps:  # replicas carried over from an earlier plan keep their instance
                if r.shape.kind is ShapeKind.MIG and not r.fixed and r.start is not None:
                    free_starts = starts[r.gpus[0].order][r.shape.profile]
                    if r.start in free_starts:
                        free_starts.remove(r.start)
                    else:
                        r.start = None
            for n, r in enumerate(reps):
                if r.shape.kind is ShapeKind.MIG and not r.fixed and r.start is None:
                    r.start = starts[r.gpus[0].order][r.shape.profile].pop(0)
                start = r.start
                cost = self._rep_cost(r)
                cost_by[d.key] += cost
                assignments.append(Assignment(
                    demand=d.key, replica=n, shape=r.shape, node=r.node.name,
                    gpus=tuple(g.index for g in r.gpus), start=start, cost=round(cost, 6),
                    pod=r.pod, reason=r.reason,
                ))
        used = [s for s in st.gpus if s.ours > 0]
        cpu_cost = sum(self._rep_cost(r) for r in self.reps.values() if r.shape.kind is ShapeKind.CPU)
        total = sum(s.price for s in used) + cpu_cost
        unplaced = [
            Unplaced(self.demands[i].key, n, self._why_unplaced(i)) for i, n in sorted(self.unplaced.items())
        ]
        notes = list(self.snapshot.warnings)
        for node in self.snapshot.nodes:
            notes += [f"{node.name}: {w}" for w in node.warnings]
        return Plan(
            assignments=tuple(assignments),
            unplaced=tuple(unplaced),
            layout_changes=tuple(sorted(changes, key=lambda c: (c.node, c.gpu))),
            evictions=tuple(sorted(self.evictions, key=lambda e: e.pod)),
            cost_per_hour=round(total, 6),
            gpus_used=len(used),
            notes=tuple(notes),
            cost_by_demand={k: round(v, 6) for k, v in cost_by.items()},
        )

    def _rep_cost(self, r: _Rep) -> float:
        if r.shape.kind is ShapeKind.CPU:
            return self.snapshot.cpu_price * r.shape.cpu_millis / 1000
        price = r.gpus[0].price if r.gpus else 0.0
        return price * self._units(r.shape)

    def _why_unplaced(self, i: int) -> str:
        d = self.demands[i]
        cands = self.cands[i]
        if not cands:
            rejected = self.rejected[i]
            if not rejected:
                if not self.snapshot.nodes:
                    return "the cluster has no nodes"
                return "no accepted accelerator exists in this cluster"
            head = "; ".join(rejected[:4])
            more = f" (and {len(rejected) - 4} more)" if len(rejected) > 4 else ""
            return f"no shape in this cluster meets the model's needs: {head}{more}"
        parts: list[str] = []
        for product in sorted({c.shape.product for c in cands if c.shape.product}):
            free = 0
            total = 0
            best_node = 0
            for g in self.state.groups_by_product.get(product, []):
                if g.key[2] and not d.allow_spot:
                    continue
                total += g.size
            for node in self.state.nodes:
                if node.gpus and node.gpus[0].product == product and (
                    d.allow_spot or node.spec.price_tier is not PriceTier.SPOT):
                    free += len(node.free)
                    best_node = max(best_node, len(node.free))
            text = f"{product}: {free} of {total} GPUs free"
            if d.tensor_parallel > 1:
                text += f", at most {best_node} free on one node (tensor parallel needs {d.tensor_parallel})"
            parts.append(text)
        cpu = [c for c in cands if c.shape.kind is ShapeKind.CPU]
        if cpu:
            most = max((n.cpu_free for n in self.state.cpu_nodes), default=0)
            parts.append(f"CPU: at most {most / 1000:g} cores free on a node, "
                         f"{cpu[0].shape.cpu_millis / 1000:g} needed")
        shapes = ", ".join(c.shape.describe() for c in cands[:4]) + (" ..." if len(cands) > 4 else "")
        spot = "" if d.allow_spot else " (spot nodes excluded by the pool)"
        return f"no free capacity for any accepted shape ({shapes}){spot}: " + "; ".join(parts)


@functools.cache
def _units(shape: Shape) -> float:
    """GPUs a shape occupies: whole GPUs, or a slice's neutral share max(c/7, m/8)."""
    if shape.kind is ShapeKind.GPU:
        return float(shape.gpus)
    if shape.kind is ShapeKind.CPU:
        return 0.0
    return mig.fraction(catalog.by_key(shape.product).profile(shape.profile))


def _fields(r: _Rep) -> tuple[Any, ...]:
    return (r.shape, r.node, list(r.gpus), r.start, r.pod, r.reason, r.fixed)


def _restore(r: _Rep, old: tuple[Any, ...]) -> None:
    r.shape, r.node, r.gpus, r.start, r.pod, r.reason, r.fixed = old[0], old[1], list(old[2]), *old[3:]


def _group_sort(where: object) -> tuple[str, float, bool, bool]:
    if isinstance(where, Group):
        return where.key
    return ("", 0.0, False, False)


def _free_in_current(slot: GpuSlot, prof: str) -> bool:
    """Whether the GPU's current layout has a ``prof`` instance the plan has not used yet."""
    if slot.current is None or slot.state is not GpuState.PLANNED:
        return False
    return sum(1 for name, _ in slot.current if name == prof) > slot.content.get(prof, 0)


def _layout_rank(slot: GpuSlot, prof: str) -> tuple[int, int]:
    """Prefer GPUs whose current layout already has the most such instances (no re-layout), then any
    MIG-enabled GPU, then whole ones (enabling MIG)."""
    if slot.current is None:
        return (1, 0)
    return (0, -sum(1 for name, _ in slot.current if name == prof))


def _holding_shape(product: str, h: Holding) -> Shape:
    if h.instance is not None:
        return Shape(ShapeKind.MIG, product, gpus=1, profile=h.instance[1])
    if h.gpus:
        return Shape(ShapeKind.GPU, product, gpus=len(h.gpus))
    return Shape(ShapeKind.CPU, cpu_millis=h.cpu_millis, memory_mib=h.memory_mib)


def _holding_cost(gpu_price: float, cpu_price: float, shape: Shape) -> float:
    if shape.kind is ShapeKind.GPU:
        return gpu_price * shape.gpus
    if shape.kind is ShapeKind.MIG:
        return gpu_price * mig.fraction(catalog.by_key(shape.product).profile(shape.profile))
    return cpu_price * shape.cpu_millis / 1000


def _same_shape(accepted: Shape, running: Shape) -> bool:
    if accepted.kind is not running.kind:
        return False
    if accepted.kind is ShapeKind.CPU:
        return running.cpu_millis >= accepted.cpu_millis and running.memory_mib >= accepted.memory_mib
    return accepted == running
