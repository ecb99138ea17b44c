"""The solver's greedy phase: place replicas largest first, each on its cheapest amortised shape.

Each replica takes, in order of preference: spare room on a GPU the plan already pays for (zero
marginal cost; best fit, spot rooms first, instances the current layout already has first), else
the opening with the lowest amortised price that has capacity: a whole GPU costs its price, a MIG
instance the neutral share ``price x max(c/7, m/8)`` (variant ``share``) or the GPU's price over
the replicas of this model that will fill it (variant ``self``), CPU its cores. Replicas go in
batches: all that fit on the chosen GPU or node at once.
"""

from __future__ import annotations

from gpupool_operator.core import mig
from gpupool_operator.core.cost import PriceTier
from gpupool_operator.core.demand import Candidate, ShapeKind, Strategy
from gpupool_operator.core.solverbase import (
    EPS,
    Rep,
    SolverBase,
    free_in_current,
    group_sort,
    layout_rank,
)
from gpupool_operator.core.state import GpuSlot, GpuState, Group, NodeState

__all__ = ["Greedy"]


class Greedy(SolverBase):
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
    def _place(self, i: int, n: int) -> int:
        if self.demands[i].strategy is not Strategy.COST:
            return self._place_strategic(i, n)
        spot_ok = self._spot_ok(i)
        spots = (False, True) if spot_ok else (False,)
        mig_cands = [c for c in self.cands[i] if c.shape.kind is ShapeKind.MIG]
        mig_cands.sort(key=lambda c: (self._units(c.shape), c.shape))
        static = self._static_options(i, n)
        while n > 0:
            if self.variant.amortize == "self":
                static = self._static_options(i, n)
            # 1. spare room on a GPU this plan already pays for: zero marginal cost.
            room = self._best_room(i, mig_cands, spots, exclude=None)
            if room is not None:
                n -= self._fill_room(i, room[1], room[2], n, reason_zero=True)
                continue
            # 2. the cheapest amortised option with capacity.
            best: tuple[float, int, str, object, Candidate] | None = None
            for price, tie, kind, where, cand in static:
                if best is not None and price > best[0] + EPS:
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
                    self.state.cpu_fit(cand.shape.cpu_millis, cand.shape.memory_mib, spot_ok,
                                       self._admit(i, ShapeKind.CPU)), None
                ):
                    best = (price, tie, kind, None, cand)
                    break
            fixed_new = self._best_fixed_uncharged(i, mig_cands, spots)
            if fixed_new is not None and (best is None or fixed_new[0] < best[0] - EPS):
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
        admit = self._admit(i, ShapeKind.GPU)
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
        # equal prices: nodes whose PreferNoSchedule taints the pods tolerate first
        out.sort(key=lambda o: (o[0], admit[o[3].key[4]] if isinstance(o[3], Group) else 0, o[2] != "cpu", o[1],
                                group_sort(o[3])))
        return out
    def _best_room(
        self, i: int, mig_cands: list[Candidate], spots: tuple[bool, ...], exclude: GpuSlot | None
    ) -> tuple[float, GpuSlot, Candidate] | None:
        best: tuple[float, GpuSlot, Candidate] | None = None
        admit = self._admit(i, ShapeKind.MIG)
        for cand in mig_cands:  # ascending units: stop once no later candidate can win
            if best is not None and self._units(cand.shape) > best[0] + 0.05:
                break
            prof = cand.shape.profile
            for spot in sorted(spots, reverse=True):  # spot rooms first: on-demand ones suit more models
                for taints, soft in admit.items():
                    for slot in (
                        self.state.room(cand.shape.product, spot, prof, taints),
                        self.state.fixed_room(cand.shape.product, spot, prof, True, taints),
                    ):
                        if slot is None or slot is exclude:
                            continue
                        # Zero marginal cost either way: use the least capacity, then a spot GPU's
                        # room (on-demand rooms can take any model), then the cheaper GPU; a node
                        # whose PreferNoSchedule taints the pod does not tolerate comes after.
                        score = (self._units(cand.shape) + (1e-2 if not slot.spot else 0.0)
                                 + 1e-4 * slot.price * self._units(cand.shape) + 0.05 * soft)
                        if free_in_current(slot, prof):
                            score -= 0.1  # an instance the GPU already has: no MIG reconfiguration
                        if best is None or (score, slot.order) < (best[0], best[1].order):
                            best = (score, slot, cand)
        return best
    def _best_fixed_uncharged(
        self, i: int, mig_cands: list[Candidate], spots: tuple[bool, ...]
    ) -> tuple[float, GpuSlot, Candidate] | None:
        best: tuple[float, int, GpuSlot, Candidate] | None = None
        admit = self._admit(i, ShapeKind.MIG)
        for cand in mig_cands:
            for spot in spots:
                for taints, soft in admit.items():
                    slot = self.state.fixed_room(cand.shape.product, spot, cand.shape.profile, False, taints)
                    if slot is None:
                        continue
                    score = slot.price * self._units(cand.shape)
                    if best is None or (score, soft, slot.order) < (best[0], best[1], best[2].order):
                        best = (score, soft, slot, cand)
        return None if best is None else (best[0], best[2], best[3])
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
                self._add_rep(Rep(i, cand.shape, slot.node, [slot], start=start, reason=why, fixed=True))
            return k
        k = min(n, mig.room_for(slot.product, slot.key, prof))
        self.state.add_content(slot, prof, k)
        for _ in range(k):
            self._add_rep(Rep(i, cand.shape, slot.node, [slot], reason=why))
        return k
    def _open_mig(self, i: int, group: Group, cand: Candidate, n: int, price: float) -> int:
        node = group.best_fit(1)
        assert node is not None
        prof = cand.shape.profile
        slots = [node.gpus[j] for j in node.free]
        slot = min(slots, key=lambda s: (layout_rank(s, prof), s.index))
        self.state.take_free(node, slot)
        slot.state = GpuState.PLANNED
        k = min(n, mig.room_for(slot.product, (), prof))
        self.state.add_content(slot, prof, k)
        why = f"cheapest accepted shape with capacity: {cand.shape.describe()} at ${price:.2f}/h share"
        for _ in range(k):
            self._add_rep(Rep(i, cand.shape, node, [slot], reason=why))
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
            self._add_rep(Rep(i, cand.shape, node, sorted(chosen, key=lambda s: s.index), reason=why))
        return k
    def _place_cpu(self, i: int, cand: Candidate, n: int, price: float) -> int:
        shape = cand.shape
        node = next(self.state.cpu_fit(shape.cpu_millis, shape.memory_mib, self._spot_ok(i),
                                       self._admit(i, ShapeKind.CPU)))
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
            self._add_rep(Rep(i, shape, node, [], reason=why))
        return k

    # ------------------------------------------------------------------ BinPack and Spread
    def _place_strategic(self, i: int, n: int) -> int:
        """Place ``n`` replicas of a BinPack or Spread model one at a time, each on the option that
        ranks best under the model's strategy (see :class:`~gpupool_operator.core.demand.Strategy`).

        Scans every GPU per replica: these strategies are opt-in per pool, and the repairs leave
        their replicas where this puts them (they optimise cost only)."""
        d = self.demands[i]
        spread = d.strategy is Strategy.SPREAD
        spot_ok = self._spot_ok(i)
        touched: set[int] = set()  # nodes holding any replica of ours (BinPack)
        if not spread:
            touched = {r.node.order for r in self.reps.values()}
        mine: dict[int, int] = {}  # node -> replicas of this model on it (Spread: fewest first)
        for r in self.by_demand.get(i, ()):
            mine[r.node.order] = mine.get(r.node.order, 0) + 1
        mig_cands = sorted((c for c in self.cands[i] if c.shape.kind is ShapeKind.MIG),
                           key=lambda c: (self._units(c.shape), c.shape))
        whole = [c for c in self.cands[i] if c.shape.kind is ShapeKind.GPU]
        cpu = [c for c in self.cands[i] if c.shape.kind is ShapeKind.CPU]
        gpu_admit = self._admit(i, ShapeKind.GPU)
        cpu_admit = self._admit(i, ShapeKind.CPU)
        for k in range(n):
            best: tuple[tuple[float, ...], str, NodeState, GpuSlot | None, Candidate] | None = None

            def offer(new_gpus: int, cost: float, kind: str, node: NodeState, slot: GpuSlot | None,
                      cand: Candidate) -> None:
                nonlocal best
                soft = (cpu_admit if kind == "cpu" else gpu_admit)[node.spec.taints]
                tie = (float(soft), node.order, slot.order if slot is not None else -1)
                if spread:
                    key: tuple[float, ...] = (float(mine.get(node.order, 0)), cost, float(new_gpus), *tie)
                else:
                    key = (float(new_gpus), float(node.order not in touched), cost, *tie)
                if best is None or key < best[0]:
                    best = (key, kind, node, slot, cand)

            for node in self.state.nodes:
                if not node.gpus or (node.gpus[0].spot and not spot_ok) or node.spec.taints not in gpu_admit:
                    continue
                if best is not None:  # prune: nodes come in order, so ties go to the earlier one
                    bk = best[0]
                    if bk[0] == bk[1] == bk[2] == bk[3] == 0.0:
                        break  # nothing ranks better than free room on a node of the first kind
                    if spread and mine.get(node.order, 0) > bk[0]:
                        continue
                    if not spread and bk[0] == bk[1] == 0.0 and node.order not in touched:
                        continue
                product = node.gpus[0].product
                here = [c for c in mig_cands if c.shape.product == product]
                if here:
                    for slot in node.gpus:  # one pass over the GPUs; only used ones have rooms
                        if slot.state is GpuState.PLANNED:
                            for cand in here:
                                if mig.add(product, slot.key, cand.shape.profile) is not None:
                                    offer(0, 0.0, "room", node, slot, cand)
                        elif slot.state is GpuState.FIXED:
                            for cand in here:
                                if slot.fixed_free.get(cand.shape.profile):
                                    cost = 0.0 if slot.charged else slot.price * self._units(cand.shape)
                                    offer(0 if slot.charged else 1, cost, "fixed", node, slot, cand)
                    if node.free and node.group is not None and node.group.key[3]:
                        for cand in here:
                            cost = node.gpus[0].price * self._units(cand.shape)
                            pre = ((float(mine.get(node.order, 0)), cost, 1.0) if spread
                                   else (1.0, float(node.order not in touched), cost))
                            if best is not None and pre >= best[0][:3]:
                                continue  # cannot win (an earlier node wins ties): skip choosing the GPU
                            prof = cand.shape.profile
                            free = min((node.gpus[j] for j in node.free),
                                       key=lambda s: (layout_rank(s, prof), s.index))
                            offer(1, cost, "mig", node, free, cand)
                for cand in whole:
                    if cand.shape.product == product and len(node.free) >= cand.shape.gpus:
                        offer(cand.shape.gpus, node.gpus[0].price * cand.shape.gpus, "whole", node, None, cand)
            for cand in cpu:
                price = self.snapshot.cpu_price * cand.shape.cpu_millis / 1000
                for node in self.state.cpu_fit(cand.shape.cpu_millis, cand.shape.memory_mib, spot_ok, cpu_admit):
                    offer(0, price, "cpu", node, None, cand)
            if best is None:
                return n - k
            _key, kind, node, where, cand = best
            self._put(i, kind, node, where, cand, spread and node.order in mine)
            mine[node.order] = mine.get(node.order, 0) + 1
            touched.add(node.order)
        return 0

    def _put(self, i: int, kind: str, node: NodeState, slot: GpuSlot | None, cand: Candidate, shared: bool) -> None:
        shape = cand.shape
        d = self.demands[i]
        if d.strategy is Strategy.SPREAD:
            why = (f"{shape.describe()}: Spread, every node without a replica of this model is full"
                   if shared else f"{shape.describe()}: Spread, the cheapest option on a node without "
                   "another replica of this model")
        else:
            why = f"{shape.describe()}: BinPack, fewest new GPUs and nodes, then the cheapest"
        if kind == "cpu":
            node.cpu_free -= shape.cpu_millis
            node.mem_free -= shape.memory_mib
            self._add_rep(Rep(i, shape, node, [], reason=why))
            return
        if kind == "whole":
            chosen = sorted((node.gpus[j] for j in node.free), key=lambda s: (s.current is not None, s.index))
            chosen = chosen[: shape.gpus]
            for g in chosen:
                self.state.take_free(node, g)
                g.state = GpuState.WHOLE
                g.ours += 1
            self._add_rep(Rep(i, shape, node, sorted(chosen, key=lambda s: s.index), reason=why))
            return
        assert slot is not None
        if kind == "fixed":
            start = self.state.take_fixed(slot, shape.profile)
            self._add_rep(Rep(i, shape, node, [slot], start=start, reason=why, fixed=True))
            return
        if kind == "mig":
            self.state.take_free(node, slot)
            slot.state = GpuState.PLANNED
        self.state.add_content(slot, shape.profile)
        self._add_rep(Rep(i, shape, node, [slot], reason=why))
