"""The placement heuristic: what the operator runs every cycle, and :class:`Planner` for re-plans.

A purely computational, deterministic function of (snapshot, demands, options). One cycle:

1. **Keep.** Running replicas whose shape is still accepted stay where they are (up to the wanted
   replica count, cheapest first); the rest are stopped with a reason.
2. **Place** (:mod:`~gpupool_operator.core.greedy`). Models go largest amortised footprint first,
   GPU-bound ones before those for which CPU is cheaper; each replica takes spare room on a GPU the
   plan already pays for, else the cheapest amortised opening with capacity. Node choice is best
   fit, so whole free nodes stay available for tensor-parallel replicas.
   Pools with ``placementStrategy`` BinPack or Spread are placed replica by replica under their
   own ranking (fewest new GPUs and nodes; distinct nodes) and left where that puts them.
3. **Repair** (:mod:`~gpupool_operator.core.repair`). Swaps that place more replicas, then moves
   that strictly lower the cost: close under-filled GPUs, downgrade to cheaper GPUs, ruin and
   recreate, pull CPU replicas into spare slices. Work is bounded by counts in :class:`Options`
   (the core has no clock).
4. **Budget.** A pool whose replicas cost more than its ``budget`` loses its dearest replicas
   above ``minReplicas`` until it fits; they are reported unplaced with the budget as the reason.
5. **Lay out.** Each GPU's final MIG layout is the smallest change from its current one
   (:func:`gpupool_operator.core.mig.smallest_change`); instances get concrete start slots.

:func:`solve` runs a small portfolio of variants (processing order, amortisation) and a whole-GPU
fallback, and returns the plan placing the most replicas at the lowest cost. Above
:data:`LARGE_REPLICAS` replicas it runs one variant with bounded repairs to stay fast. Up to
:data:`~gpupool_operator.core.solverbase.SMALL_REPLICAS` replicas the winning variant's working
state (copied before its finish) is kicked (:mod:`~gpupool_operator.core.kick`): one or two GPUs
emptied and forbidden, their replicas re-placed, the repairs run again, kept only if cheaper.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from gpupool_operator.core import allowlist, catalog, mig
from gpupool_operator.core.cost import PriceTier
from gpupool_operator.core.demand import Candidate, Demand, Products, Shape, ShapeKind, candidates
from gpupool_operator.core.inventory import Holding, Snapshot
from gpupool_operator.core.kick import Kick
from gpupool_operator.core.plan import Assignment, Eviction, LayoutChange, Plan, Unplaced
from gpupool_operator.core.reasons import UnplacedCode
from gpupool_operator.core.solverbase import (
    LARGE_REPLICAS,
    PORTFOLIO,
    Options,
    Rep,
    Variant,
    options_from_config,
    restart_options,
    restart_variants,
)
from gpupool_operator.core.state import GpuState, MigPolicy, State
from gpupool_operator.core.taints import TaintEffect, untolerated

__all__ = ["LARGE_REPLICAS", "PORTFOLIO", "MigPolicy", "Options", "Planner", "Variant", "options_from_config",
           "products_of", "solve"]


def products_of(snapshot: Snapshot) -> Products:
    """The GPU products of a snapshot, sized from what the nodes report (the smallest figure of a
    product's nodes: a replica sized for it fits on every one of them)."""
    known = sorted({n.product for n in snapshot.nodes if n.product and n.gpus})
    unknown: dict[str, int] = {}
    for n in snapshot.nodes:
        if n.gpus and not n.product:
            label = n.product_label or "unknown-gpu"
            unknown[label] = max(unknown.get(label, 0), n.gpu_memory_mib)
    mig_memory: dict[tuple[str, str], int] = {}
    gpu_memory: dict[str, int] = {}
    for n in snapshot.nodes:
        if n.product and n.gpus:
            for profile, mib in n.mig_memory:
                key = (n.product, profile)
                mig_memory[key] = min(mig_memory.get(key, mib), mib)
            if n.gpu_memory_mib > 0:
                gpu_memory[n.product] = min(gpu_memory.get(n.product, n.gpu_memory_mib), n.gpu_memory_mib)
    return Products(tuple(known), tuple(sorted(unknown.items())),
                    tuple((p, q, mib) for (p, q), mib in sorted(mig_memory.items())),
                    tuple(sorted(gpu_memory.items())))


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

    def adopt(self, pods: Mapping[tuple[str, int], str]) -> int:
        """Name the pods that now run replicas of the last plan: ``(demand, replica) -> pod``.

        A new replica of a plan has no pod; once the caller has started one for it, re-plans must
        treat it as running (kept, reported with its pod, stopped with an eviction when scaled
        down) rather than as a plan-only replica. Returns how many replicas were named.
        """
        if self._solver is None:
            return 0
        named = 0
        for key, pod in pods.items():
            rep = self._solver.last_reps.get(key)
            if rep is not None and rep.pod is None:
                rep.pod = pod
                named += 1
        return named


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
    if opts.mig_policy is MigPolicy.ALLOW_LIST and opts.allowed_layouts:
        return allowlist.solve(snapshot, demands, opts, _portfolio)
    return _portfolio(snapshot, demands, opts)


def _portfolio(snapshot: Snapshot, demands: Sequence[Demand], opts: Options) -> tuple[Plan, _Solver]:
    variants = PORTFOLIO[: max(1, opts.portfolio_size or 1)] if opts.portfolio else PORTFOLIO[:1]
    first_restart = len(variants)  # the reshuffles after it run with lighter repairs
    if opts.portfolio:
        variants += restart_variants(opts.restarts or 0)
    lighter = restart_options(opts)
    best: tuple[int, float, int] | None = None
    chosen: tuple[Plan, _Solver] | None = None
    unfinished: _Solver | None = None  # the winner's working state before its finish, for the kicks
    kicks = (opts.kicks or 0) if opts.improve else 0
    for n, variant in enumerate(variants):
        light = n >= first_restart and variant.order.startswith("shuffle-")
        solver = _Solver(snapshot, demands, lighter if light else opts, variant=variant)
        solver.search()
        # The finish only takes replicas out (budget, off spot), so a plan can beat the best only
        # if its standing before the finish does: only then is that state worth a copy.
        standing = solver.standing()
        copy = solver.copy() if kicks and (best is None or (*standing, n) < best) else None
        plan = solver.finish()
        key = (-len(plan.assignments), round(plan.cost_per_hour + opts.move_penalty * _moves(plan), 6), n)
        if best is None or key < best:
            best, chosen, unfinished = key, (plan, solver), copy
    assert chosen is not None
    assert best is not None
    if kicks and unfinished is not None and unfinished.kick_pass(kicks):
        plan = unfinished.finish()
        key = (-len(plan.assignments), round(plan.cost_per_hour + opts.move_penalty * _moves(plan), 6), -1)
        if key < best:
            best, chosen = key, (plan, unfinished)
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


def _same_requirements(old: Demand, new: Demand) -> bool:
    """Whether replicas placed for ``old`` still serve ``new``: only the count, the guaranteed share
    (``minReplicas``) or the budget differ, and every plan enforces the budget afresh."""
    return dataclasses.replace(old, replicas=new.replicas, guaranteed=new.guaranteed, budget=new.budget) == new


def _moves(plan: Plan) -> int:
    return sum(1 for e in plan.evictions if e.reason.startswith("moved"))


class _Solver(Kick):
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
        self.reps: dict[int, Rep] = {}  # insertion-ordered set of placed replicas, by id()
        self.capture: list[Rep] | None = None  # collects replicas added while set
        self.slot_index: dict[int, list[Rep]] = {}  # GPU order -> replicas, rebuilt per repair pass
        self.mig_hosts: dict[str, list[int]] = {}  # product -> GPUs with planned MIG replicas
        self.evictions: list[Eviction] = []
        self.unplaced: dict[int, int] = {}
        self.no_spot = False  # set while placing the replicas a model must keep off spot
        self.eject_budget = 10 * (options.lns_attempts or 0)
        self.by_demand: dict[int, list[Rep]] = {}
        self.final_layout: dict[int, mig.Placement] = {}  # GPU order -> layout in the last plan
        self.last_reps: dict[tuple[str, int], Rep] = {}  # (demand, replica) of the last plan -> replica
        self.over_budget: dict[int, int] = {}  # model -> replicas taken out to keep its pool's budget
        self.budget_note: dict[int, str] = {}
        self.off_spot_short: dict[int, int] = {}  # model -> spot replicas given up to keep min_off_spot
        self.products = products
        self.state: State
    def run(self) -> Plan:
        self.search()
        return self.finish()

    def search(self) -> None:
        """Everything up to the finish: keep, place, repair to a bounded fixpoint."""
        keep = self._choose_kept()
        self.state = State.from_snapshot(self.snapshot, keep=set(keep), policy=self.options.mig_policy)
        self._materialise_kept(keep)
        todo = [max(0, d.replicas - len(self.by_demand.get(i, ()))) for i, d in enumerate(self.demands)]
        for i in sorted(range(len(self.demands)), key=self._size_key):
            if todo[i]:
                left = self._place_demand(i, todo[i])
                if left:
                    self.unplaced[i] = left
        budget = [self.options.lns_attempts or 0]
        pairs = [self.options.pair_attempts or 0]
        # A fixpoint, bounded: repairs move replicas and free capacity, so what found no room in an
        # earlier round is placed again, then repaired again, until a round places nothing more.
        for round_ in range(1 + max(0, self.options.fixpoint_rounds)):
            if round_ and not self._place_unplaced():
                break
            if self.options.improve and self.unplaced:
                self._count_repair()
            if self.options.improve:
                self._improve(budget, pairs)
            if not self.unplaced:
                break

    def finish(self) -> Plan:
        """Budgets, the off-spot promise, MIG layouts with start slots: the plan (ends the search)."""
        return self._finish()

    def _place_unplaced(self) -> bool:
        """Try every still-unplaced replica again; whether any found room."""
        placed = False
        for i in sorted(self.unplaced, key=self._size_key):
            want = self.unplaced[i]
            left = self._place_demand(i, want)
            placed |= left < want
            if left:
                self.unplaced[i] = left
            else:
                del self.unplaced[i]
        return placed

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
            if new != old and not _same_requirements(old, new):
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
        """Remove ``k`` replicas of model ``i``: plan-only ones first, the most expensive first, but
        never one of the replicas that keep its ``min_off_spot`` promise while another can go
        (else the final pass would give up every spot replica of the model to keep the promise)."""
        d = self.demands[i]
        for _ in range(k):
            reps = sorted(self.by_demand.get(i, ()),
                          key=lambda r: (r.pod is not None, -self._rep_cost(r), r.node.name))
            if not reps:
                return
            off = sum(1 for r in reps if r.node.spec.price_tier is not PriceTier.SPOT)
            if d.allow_spot and d.min_off_spot and off - 1 < d.min_off_spot <= len(reps) - 1:
                spot = [r for r in reps if r.node.spec.price_tier is PriceTier.SPOT]
                reps = spot or reps
            r = reps[0]
            if r.pod is not None:
                self.evictions.append(Eviction(r.pod, r.node.name, d.key, why))
            self._detach(r)
            self._remove_rep(r)

    def _choose_kept(self) -> list[str]:
        running: dict[int, list[tuple[float, str, str, Shape]]] = {}
        for node in self.snapshot.nodes:
            for h in node.holdings:
                if h.owner is None:
                    continue
                i = self.index.get(h.owner)
                shape = _holding_shape(node.product or node.product_label, h)
                cost = node.gpu_price * self._units(shape) if shape.kind is not ShapeKind.CPU else \
                    self.snapshot.cpu_price * shape.cpu_millis / 1000
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
                evicting = [t for t in untolerated(self.demands[i].tolerations_for(shape.kind), node.taints)
                            if t.effect == TaintEffect.NO_EXECUTE]
                if evicting:  # the taint manager evicts it anyway: place it where it may run
                    self.evictions.append(Eviction(h.pod, node.name, h.owner, f"the node's taint "
                                                   f"{evicting[0].describe()} is not tolerated"))
                    continue
                running.setdefault(i, []).append((cost, h.pod, node.name, shape))
        spot = {n.name for n in self.snapshot.nodes if n.price_tier is PriceTier.SPOT}
        keep: list[str] = []
        for i, items in sorted(running.items()):
            items.sort()
            d = self.demands[i]
            want = d.replicas
            kept, gone = items[:want], items[want:]
            # the cheapest, but keeping the min-off-spot promise when running replicas can (else
            # the final pass would give up the model's spot replicas to keep it)
            need = min(d.min_off_spot, want) if d.allow_spot else 0
            short = need - sum(1 for x in kept if x[2] not in spot)
            if short > 0:
                extra = [x for x in gone if x[2] not in spot][:short]
                out = [x for x in reversed(kept) if x[2] in spot][:len(extra)]
                kept = sorted([x for x in kept if x not in out] + extra[:len(out)])
                gone = sorted([x for x in gone if x not in extra[:len(out)]] + out)
            keep += [pod for _cost, pod, _node, _shape in kept]
            for _cost, pod, node_name, _shape in gone:
                self.evictions.append(Eviction(pod, node_name, d.key, "scaled down"))
        return keep
    def _materialise_kept(self, keep: list[str]) -> None:
        kept = set(keep)
        for node in self.state.nodes:
            by_index = {s.index: s for s in node.gpus}
            for h in node.spec.holdings:
                if h.pod not in kept or h.owner is None:
                    continue
                shape = _holding_shape(node.spec.product or node.spec.product_label, h)
                rep = Rep(self.index[h.owner], shape, node, [], pod=h.pod,
                           reason="kept where it runs: its shape is still accepted")
                if h.instance is not None:
                    rep.gpus = [by_index[h.instance[0]]]
                    rep.start = h.instance[2]
                    rep.fixed = True
                else:
                    rep.gpus = [by_index[g] for g in h.gpus if g in by_index]
                self._add_rep(rep)
    def _enforce_budgets(self) -> None:
        """Keep every pool within its ``budget``: while a pool's replicas cost more than its cap,
        take out its dearest replica above the model's guaranteed count (plan-only ones before
        running ones); those are reported unplaced with the budget as the reason."""
        self.over_budget = {}
        self.budget_note = {}
        pools: dict[str, list[int]] = {}
        for i, d in enumerate(self.demands):
            if d.budget is not None and d.replicas > 0:
                pools.setdefault(d.budget.pool, []).append(i)
        for pool in sorted(pools):
            members = pools[pool]
            cap = min(b.usd_per_hour for i in members for b in [self.demands[i].budget] if b is not None)
            total = sum(self._rep_cost(r) for i in members for r in self.by_demand.get(i, ()))
            if total <= cap + 1e-9:
                continue
            spare: list[Rep] = []
            for i in members:
                reps = sorted(self.by_demand.get(i, ()), key=lambda r: (r.pod is not None, -self._rep_cost(r)))
                keep = max(0, self.demands[i].guaranteed)
                spare += reps[: max(0, len(reps) - keep)]
            spare.sort(key=lambda r: (-self._rep_cost(r), r.pod is not None, self.demands[r.demand].key, r.node.order))
            for r in spare:
                if total <= cap + 1e-9:
                    break
                total -= self._rep_cost(r)
                if r.pod is not None:
                    self.evictions.append(Eviction(r.pod, r.node.name, self.demands[r.demand].key,
                                                   f"over the pool's budget of ${cap:.2f}/h"))
                self._detach(r)
                self._remove_rep(r)
                self.over_budget[r.demand] = self.over_budget.get(r.demand, 0) + 1
            for i in members:
                if i in self.over_budget:
                    self.budget_note[i] = (
                        f"over budget: pool {pool} may cost at most ${cap:.2f}/h (budget.maxUsdPerHour); "
                        f"its placed replicas cost ${max(0.0, total):.2f}/h"
                    )
    def _enforce_off_spot(self) -> None:
        """Keep every model's ``min_off_spot`` promise: once a model has that many replicas placed,
        that many run off spot (spot capacity may vanish at once; a model must not lose all of it).

        Greedy placement and the repairs aim to keep the promise; a repair move or the budget cut
        can still leave a model with replicas only on spot when no on-demand room is left for it.
        This final pass is the guarantee the verifier and the exact model hold: such a model gives
        up spot replicas (plan-only ones first) until it is below the promised count, and they are
        reported unplaced with the reason.
        """
        self.off_spot_short = {}
        for i, d in enumerate(self.demands):
            if not d.allow_spot or d.min_off_spot == 0:
                continue
            reps = list(self.by_demand.get(i, ()))
            off = sum(1 for r in reps if r.node.spec.price_tier is not PriceTier.SPOT)
            if len(reps) < d.min_off_spot or off >= d.min_off_spot:
                continue
            spot = sorted(
                (r for r in reps if r.node.spec.price_tier is PriceTier.SPOT),
                key=lambda r: (r.pod is not None, -self._rep_cost(r), r.node.order),
            )
            placed = len(reps)
            for r in spot:
                if placed < d.min_off_spot:
                    break
                if r.pod is not None:
                    self.evictions.append(Eviction(
                        r.pod, r.node.name, d.key, f"{d.key} needs {d.min_off_spot} replica(s) off spot first"))
                self._detach(r)
                self._remove_rep(r)
                placed -= 1
                self.off_spot_short[i] = self.off_spot_short.get(i, 0) + 1

    def _finish(self) -> Plan:
        self._enforce_budgets()
        self._enforce_off_spot()
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
                if slot.current is None or sorted(slot.current) != sorted(after):
                    after = _padded(product, slot.current, after, slot.content)
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
        self.last_reps = {}
        per_demand: dict[int, list[Rep]] = {}
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
                self.last_reps[(d.key, n)] = r
                assignments.append(Assignment(
                    demand=d.key, replica=n, shape=r.shape, node=r.node.name,
                    gpus=tuple(g.index for g in r.gpus), start=start, cost=round(cost, 6),
                    pod=r.pod, reason=r.reason,
                ))
        used = [s for s in st.gpus if s.ours > 0]
        cpu_cost = sum(self._rep_cost(r) for r in self.reps.values() if r.shape.kind is ShapeKind.CPU)
        total = sum(s.price for s in used) + cpu_cost
        unplaced = []
        for i in sorted(set(self.unplaced) | set(self.over_budget) | set(self.off_spot_short)):
            n, why = self.unplaced.get(i, 0), []
            code = ""
            if n:
                text, code = self._why_unplaced(i)
                why.append(text)
            if self.over_budget.get(i):
                why.append(self.budget_note[i])
                code = UnplacedCode.BUDGET_EXCEEDED
            if self.off_spot_short.get(i):
                why.append(
                    f"{self.demands[i].min_off_spot} replica(s) must run off spot and no on-demand capacity "
                    "fits them, so its spot replicas are held back (allowSpot: true lets every replica "
                    "run on spot)"
                )
                code = code or UnplacedCode.SPOT_ONLY
            count = n + self.over_budget.get(i, 0) + self.off_spot_short.get(i, 0)
            unplaced.append(Unplaced(self.demands[i].key, count, "; ".join(why), code=str(code)))
        notes = list(self.snapshot.warnings)
        for node in self.snapshot.nodes:
            notes += [f"{node.name}: {w}" for w in node.warnings]
            notes += [f"{node.name}: {w}" for w in node.capacity_conflicts]
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
    def _why_unplaced(self, i: int) -> tuple[str, str]:
        """Why model ``i``'s last replicas found no place, in words and as a condition reason. The
        numbers are the ones the placement saw: free GPUs per accepted product on nodes the pods
        may use, and what spot, taints or the MIG policy kept out."""
        d = self.demands[i]
        cands = self.cands[i]
        if not cands:
            rejected = self.rejected[i]
            if not rejected:
                if not self.snapshot.nodes:
                    return "the cluster has no nodes", UnplacedCode.NO_NODES
                return "no accepted accelerator exists in this cluster", UnplacedCode.NO_ACCEPTED_SHAPE
            head = "; ".join(rejected[:4])
            more = f" (and {len(rejected) - 4} more)" if len(rejected) > 4 else ""
            return f"no shape in this cluster meets the model's needs: {head}{more}", UnplacedCode.NO_ACCEPTED_SHAPE
        admit = self._admit(i, ShapeKind.GPU)
        parts: list[str] = []
        code = UnplacedCode.INSUFFICIENT_CAPACITY
        spot_free = usable_free = 0
        tainted: dict[str, int] = {}
        for product in sorted({c.shape.product for c in cands if c.shape.product}):
            free = total = best_node = 0
            held_back: dict[str, int] = {}
            for node in self.state.nodes:
                if not node.gpus or node.gpus[0].product != product:
                    continue
                if node.spec.taints not in admit:
                    for t in untolerated(d.tolerations_for(ShapeKind.GPU), node.spec.taints):
                        tainted[t.describe()] = tainted.get(t.describe(), 0) + len(node.gpus)
                    continue
                if node.spec.price_tier is PriceTier.SPOT and not d.allow_spot:
                    continue
                total += len(node.gpus)
                free += len(node.free)
                for g in node.spec.gpus:
                    if g.unusable:
                        held_back[g.unusable] = held_back.get(g.unusable, 0) + 1
                best_node = max(best_node, len(node.free))
                if node.spec.price_tier is PriceTier.SPOT:
                    spot_free += len(node.free)
                else:
                    usable_free += len(node.free)
            text = f"{product}: {free} of {total} GPUs free"
            if held_back:
                text += " (" + ", ".join(f"{n} unusable: {why}" for why, n in sorted(held_back.items())) + ")"
            if d.tensor_parallel > 1:
                text += f", at most {best_node} free on one node (tensor parallel needs {d.tensor_parallel})"
            parts.append(text)
        cpu = [c for c in cands if c.shape.kind is ShapeKind.CPU]
        if cpu:
            cpu_admit = self._admit(i, ShapeKind.CPU)
            most = max((n.cpu_free for n in self.state.cpu_nodes if n.spec.taints in cpu_admit), default=0)
            parts.append(f"CPU: at most {most / 1000:g} cores free on a node whose taints the pods tolerate, "
                         f"{cpu[0].shape.cpu_millis / 1000:g} needed")
        shapes = ", ".join(c.shape.describe() for c in cands[:4]) + (" ..." if len(cands) > 4 else "")
        extra = ""
        if not d.allow_spot:
            extra = " (spot nodes excluded: allowSpot is false)"
        elif d.min_off_spot and spot_free and not usable_free:
            extra = (f" (only spot GPUs are free and {d.min_off_spot} replica(s) must run off spot first; "
                     "allowSpot: true lets every replica run on spot)")
            code = UnplacedCode.SPOT_ONLY
        if tainted:
            listed = ", ".join(f"{name} ({n} GPUs)" for name, n in sorted(tainted.items()))
            parts.append(f"not tolerated: {listed}")
            if not usable_free and not spot_free:
                code = UnplacedCode.TAINTED
        if self.options.mig_policy is not MigPolicy.ANY and all(c.shape.kind is ShapeKind.MIG for c in cands):
            parts.append("MIG re-layout is not allowed (mig.policy), so only existing free instances count")
            code = UnplacedCode.MIG_RELAYOUT_FORBIDDEN if code is UnplacedCode.INSUFFICIENT_CAPACITY else code
        return f"no free capacity for any accepted shape ({shapes}){extra}: " + "; ".join(parts), code


def _padded(
    product: catalog.GpuProduct, current: mig.Placement | None, after: mig.Placement, content: dict[str, int]
) -> mig.Placement:
    """A layout that changes anyway is filled up with more instances of its most used profile, so
    the next replicas of that size need no second reconfiguration (NVIDIA's MIG manager applies a
    GPU's layout as a whole)."""
    counts = dict(mig.placement_counts(after))
    prof = min(content, key=lambda p: (-content[p], p))
    extra = mig.room_for(product.key, mig.counts_key(counts), prof)
    if not extra:
        return after
    counts[prof] = counts.get(prof, 0) + extra
    padded = mig.place(product, counts) if current is None else mig.smallest_change(product, current, (), counts)
    return padded if padded is not None else after


def _holding_shape(product: str, h: Holding) -> Shape:
    if h.instance is not None:
        return Shape(ShapeKind.MIG, product, gpus=1, profile=h.instance[1])
    if h.gpus:
        return Shape(ShapeKind.GPU, product, gpus=len(h.gpus))
    return Shape(ShapeKind.CPU, cpu_millis=h.cpu_millis, memory_mib=h.memory_mib)


def _same_shape(accepted: Shape, running: Shape) -> bool:
    if accepted.kind is not running.kind:
        return False
    if accepted.kind is ShapeKind.CPU:
        return running.cpu_millis >= accepted.cpu_millis and running.memory_mib >= accepted.memory_mib
    return accepted == running
