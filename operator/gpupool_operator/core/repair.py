"""The solver's repair moves, run after the greedy phase; each accepted move strictly improves.

* **count repair**: take out one big replica if that lets several unplaced ones in, or as many
  of other models for less money (the unplaced models are placed before the victim's own);
* **close**: empty a GPU whose replicas fit elsewhere (spare room, CPU, a cheaper fresh GPU, or a
  one-step ejection chain) for less than the GPU costs plus the move penalty;
* **downgrade**: move a MIG GPU's content to a cheaper free GPU, spilling what does not fit;
* **ruin and recreate**: empty one or two GPUs and re-place their replicas greedily (largest
  first, then smallest first), keeping the result only if cheaper;
* **pull**: move CPU replicas into spare slices of GPUs already paid for, splitting a GPU used
  whole by one replica into MIG when that lets them in, and swapping a CPU replica with a sliced one
  whose CPU shape is cheaper (a two-step ejection chain).

Replicas of BinPack and Spread pools are never moved by these (they optimise dollars only).

Every move records the placements it touches and undoes them exactly when it does not pay off.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpupool_operator.core import mig
from gpupool_operator.core.demand import Candidate, ShapeKind, Strategy
from gpupool_operator.core.greedy import Greedy
from gpupool_operator.core.plan import Eviction
from gpupool_operator.core.solverbase import (
    EJECT_HOSTS,
    Rep,
    fields,
    group_sort,
    layout_rank,
    restore,
)
from gpupool_operator.core.state import GpuSlot, GpuState, Group, NodeState

__all__ = ["Repair"]


class Repair(Greedy):
    def _improve(self, budget: list[int], pairs: list[int]) -> bool:
        """The cost moves in rounds until a round changes nothing (two rounds, four when the close
        pass is unbounded); ``budget`` and ``pairs`` count down the ruin-and-recreate attempts."""
        improved = False
        for _ in range(4 if (self.options.close_attempts or 0) > 10**6 else 2):
            changed = self._close_pass()
            changed |= self._downgrade_pass()
            changed |= self._lns_pass(budget)
            changed |= self._demand_lns(pairs)
            changed |= self._pull_pass()
            improved |= changed
            if not changed:
                break
        return improved
    def _count_repair(self) -> None:
        """Place more replicas: take out one big replica (tensor parallel or whole GPU) and keep
        the change if the unplaced models, smallest first, and then that replica again, place more
        replicas than were taken out. Each accepted swap strictly raises the count placed."""
        attempts = max(1, (self.options.lns_attempts or 0) // 6)
        big = sorted(
            (r for r in self.reps.values() if r.pod is None and r.shape.kind is ShapeKind.GPU and self._movable(r)),
            key=lambda r: (-len(r.gpus) * r.gpus[0].price, r.node.order, r.gpus[0].index),
        )
        for victim in big:
            if not self.unplaced or attempts <= 0:
                return
            if id(victim) not in self.reps:
                continue
            attempts -= 1
            saved = fields(victim)
            was = {id(g): True for g in victim.gpus}
            touched = {id(g): g for g in victim.gpus}
            self._detach(victim)
            self._remove_rep(victim)
            self.capture = []
            todo = dict(self.unplaced)
            todo[victim.demand] = todo.get(victim.demand, 0) + 1
            # Unplaced models smallest first; the victim's model last, so what it frees goes to them.
            for i in sorted(todo, key=lambda i: (i == victim.demand, -self._size_key(i)[1], self.demands[i].key)):
                self._place_demand(i, todo[i])
            new, self.capture = self.capture, None
            added: dict[int, int] = {}
            delta = 0.0
            for r in new:
                for g in r.gpus:
                    touched[id(g)] = g
                    added[id(g)] = added.get(id(g), 0) + 1
                if r.shape.kind is ShapeKind.CPU:
                    delta += self._rep_cost(r)
            for key, g in touched.items():
                before = was.get(key, g.ours - added.get(key, 0) > 0)
                delta += g.price * ((g.ours > 0) - before)
            # More replicas placed, or as many (another model's) for less money.
            if len(new) > 1 or (len(new) == 1 and delta < -1e-6):
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
            restore(victim, saved)
            self._attach(victim)
            self._add_rep(victim)
    def _units_on(self) -> dict[int, list[Rep]]:
        on: dict[int, list[Rep]] = {}
        for r in self.reps.values():
            if not self._movable(r):
                continue  # its GPU then counts more replicas than listed: the moves skip it
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
    def _fill_of(self, reps: list[Rep]) -> float:
        return sum(self._units(r.shape) for r in reps)
    def _try_close(self, slot: GpuSlot, reps: list[Rep]) -> bool:
        saved = slot.price
        penalty = self.options.move_penalty * sum(1 for r in reps if r.pod is not None)
        # Every replica this attempt touches, with its placement before, for an exact rollback.
        affected: list[tuple[Rep, tuple[Any, ...]]] = [(r, fields(r)) for r in reps]
        for r in reps:  # detach everything first so the source cannot be its own target
            self._detach(r)
        cost = penalty
        ok = True
        relocated: list[Rep] = []
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
            restore(r, old)
        for r, _ in affected:
            self._attach(r)
        return False
    def _eject_into(
        self, r: Rep, budget: float, source: GpuSlot, affected: list[tuple[Rep, tuple[Any, ...]]]
    ) -> float | None:
        """Put ``r`` where another replica sits, moving that one to spare room or CPU (one-step
        ejection chain). Returns the cost of the move, or ``None`` (nothing changed)."""
        if self.eject_budget <= 0:
            return None
        spot_ok = self._may_use_spot(r)
        mig_cands = self._mig_cands(r.demand)
        if not mig_cands:
            return None
        products = {c.shape.product for c in mig_cands}
        hosts: dict[int, list[Rep]] = {}
        busy = {id(x) for x, _ in affected}
        for product in sorted(products):
            for order in self.mig_hosts.get(product, ())[:EJECT_HOSTS]:
                for other in self.slot_index.get(order, ()):
                    if (id(other) not in busy and id(other) in self.reps and other.pod is None and self._movable(other)
                            and other.shape.kind is ShapeKind.MIG and not other.fixed and other.gpus
                            and other.gpus[0].order == order and other.gpus[0] is not source):
                        hosts.setdefault(order, []).append(other)
        admit = self._admit(r.demand, ShapeKind.MIG)
        for order in sorted(hosts):
            victims = hosts[order]
            g = victims[0].gpus[0]
            if g.state is not GpuState.PLANNED or (g.spot and not spot_ok) or g.taints not in admit:
                continue
            for victim in sorted(victims, key=lambda v: (self._units(v.shape), v.demand)):
                if self.eject_budget <= 0:
                    return None
                fit = self._fit_in_place_of(g, victim, mig_cands)
                if fit is None:
                    continue
                self.eject_budget -= 1
                affected.append((victim, fields(victim)))
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
                restore(victim, affected.pop()[1])
                self._attach(victim)
        return None
    def _pull_pass(self) -> bool:
        """Move CPU replicas into spare MIG room of GPUs the plan already pays for (their cores are
        then saved). A GPU used whole by one replica that also runs on a MIG slice of it is turned
        into a MIG GPU (that replica on its smallest slice) when that lets CPU replicas in; the GPU
        costs the same either way, so every accepted step strictly lowers the cost.

        Rooms only shrink while replicas move in, so once a model's replica (with the same spot
        freedom) finds no room, its other replicas are not tried again on the same rooms."""
        penalty = self.options.move_penalty
        on_cpu = [r for r in self.reps.values() if r.shape.kind is ShapeKind.CPU]
        cpu = sorted(
            (r for r in on_cpu if self._movable(r) and self._mig_cands(r.demand)
             and (r.pod is None or self._rep_cost(r) > penalty + 1e-9)),
            key=lambda r: (-self._rep_cost(r), r.demand, r.node.order),
        )
        if not cpu:
            return False
        left = self._pull_all(cpu)
        changed = len(left) < len(cpu)
        if left and self.eject_budget > 0:
            # Replicas on slices that could run on CPU: the other end of a swap (bounded scan).
            flexible = {i for i, cs in enumerate(self.cands) if any(c.shape.kind is ShapeKind.CPU for c in cs)}
            victims: list[Rep] = []
            for v in self.reps.values():
                if (v.shape.kind is ShapeKind.MIG and v.demand in flexible and not v.fixed and v.pod is None
                        and self._movable(v)):
                    victims.append(v)
                    if len(victims) >= 4 * EJECT_HOSTS:
                        break
            if victims:
                still = [r for r in left[:EJECT_HOSTS] if not self._swap_with_cpu(r, victims)] + left[EJECT_HOSTS:]
                changed |= len(still) < len(left)
                left = still
        if not left:
            return changed
        wanted = {c.shape.product for r in left for c in self._mig_cands(r.demand)}
        attempts = self.options.close_attempts if self.options.close_attempts is not None else 10**9
        # GPUs used whole by exactly one plan-only replica of ours (ours == 1 on a WHOLE GPU).
        alone = {id(r.gpus[0]): r for r in self.reps.values()
                 if r.shape.kind is ShapeKind.GPU and len(r.gpus) == 1 and r.pod is None}
        worth: dict[tuple[str, str], bool] = {}  # (product, slice) -> could a CPU replica join it
        for slot in self.state.gpus:
            if not left or attempts <= 0:
                break
            if (slot.state is not GpuState.WHOLE or slot.ours != 1 or slot.product not in wanted
                    or slot.node.group is None or not slot.node.group.key[3]):
                continue
            found = alone.get(id(slot))
            if found is None or id(found) not in self.reps or found.gpus[0] is not slot or not self._movable(found):
                continue
            r = found
            fit = [c for c in self._mig_cands(r.demand) if c.shape.product == slot.product]
            if not fit:
                continue
            # Would anything left on CPU fit next to that slice? Checked before changing anything.
            first = (slot.product, fit[0].shape.profile)
            if first not in worth:
                after = mig.counts_key({first[1]: 1})
                profs = {c.shape.profile for i in {x.demand for x in left} for c in self._mig_cands(i)
                         if c.shape.product == slot.product}
                worth[first] = any(mig.add(slot.product, after, q) is not None for q in profs)
            if not worth[first]:
                continue
            attempts -= 1
            saved = fields(r)
            self._detach(r)
            self.state.take_free(slot.node, slot)
            slot.state = GpuState.PLANNED
            self.state.add_content(slot, fit[0].shape.profile)
            r.shape, r.gpus, r.start, r.fixed = fit[0].shape, [slot], None, False
            r.reason = f"{fit[0].shape.describe()}: its GPU is split so that replicas on CPU share it"
            still = self._pull_all(left)
            if len(still) < len(left):
                left = still
                changed = True
                worth = {}
                continue
            self._detach(r)
            restore(r, saved)
            self._attach(r)
        return changed
    def _mig_cands(self, i: int) -> list[Candidate]:
        """Model ``i``'s MIG candidates, smallest slice first (memoised per solver)."""
        memo: dict[int, list[Candidate]] = self.__dict__.setdefault("_mig_memo", {})
        got = memo.get(i)
        if got is None:
            got = memo[i] = sorted((c for c in self.cands[i] if c.shape.kind is ShapeKind.MIG),
                                   key=lambda c: (self._units(c.shape), c.shape))
        return got
    def _pull_all(self, reps: list[Rep]) -> list[Rep]:
        """Pull each of ``reps`` into spare room; returns those that stay on CPU."""
        failed: set[tuple[int, bool]] = set()
        left: list[Rep] = []
        for r in reps:
            key = (r.demand, self._may_use_spot(r))
            if key in failed or not self._pull_one(r):
                failed.add(key)
                left.append(r)
        return left
    def _swap_with_cpu(self, r: Rep, victims: list[Rep]) -> bool:
        """Swap CPU replica ``r`` with a replica on a MIG slice whose own CPU shape is cheaper: that
        one goes to CPU, ``r`` takes its place (a two-step ejection chain; strictly cheaper)."""
        if self.eject_budget <= 0 or r.pod is not None:
            return False
        mine = self._rep_cost(r)
        spot_ok = self._may_use_spot(r)
        mig_cands = self._mig_cands(r.demand)
        products = {c.shape.product for c in mig_cands}
        admit = self._admit(r.demand, ShapeKind.MIG)
        for v in victims:
            if self.eject_budget <= 0:
                return False
            if (id(v) not in self.reps or v.shape.kind is not ShapeKind.MIG or v.demand == r.demand
                    or v.shape.product not in products):
                continue
            g = v.gpus[0]
            if g.state is not GpuState.PLANNED or (g.spot and not spot_ok) or g.taints not in admit:
                continue
            cpu = [c for c in self.cands[v.demand] if c.shape.kind is ShapeKind.CPU
                   and self.snapshot.cpu_price * c.shape.cpu_millis / 1000 < mine - 1e-6]
            if not cpu:
                continue
            fit = self._fit_in_place_of(g, v, mig_cands)
            if fit is None:
                continue
            self.eject_budget -= 1
            v_spot = self._may_use_spot(v)
            self._detach(r)
            cand = cpu[0]
            node = next(self.state.cpu_fit(cand.shape.cpu_millis, cand.shape.memory_mib, v_spot,
                                           self._admit(v.demand, ShapeKind.CPU)), None)
            if node is None:
                self._attach(r)
                continue
            self.state.add_content(g, fit.shape.profile)  # before v leaves: g stays in use
            self._detach(v)
            node.cpu_free -= cand.shape.cpu_millis
            node.mem_free -= cand.shape.memory_mib
            price = self.snapshot.cpu_price * cand.shape.cpu_millis / 1000
            v.shape, v.node, v.gpus, v.start, v.fixed = cand.shape, node, [], None, False
            v.reason = f"{cand.shape.describe()} at ${price:.2f}/h: its slice went to a model dearer on CPU"
            r.shape, r.node, r.gpus, r.start, r.fixed = fit.shape, g.node, [g], None, False
            r.reason = f"{fit.shape.describe()} in spare room of a GPU already in use (cheaper than CPU cores)"
            return True
        return False
    def _pull_one(self, r: Rep) -> bool:
        """Move CPU replica ``r`` into spare room on a GPU already paid for (zero marginal cost)."""
        spots = (False, True) if self._may_use_spot(r) else (False,)
        room = self._best_room(r.demand, self._mig_cands(r.demand), spots, exclude=None)
        if room is None:
            return False
        _, slot, cand = room
        self._detach(r)
        if r.pod is not None:
            self.evictions.append(Eviction(r.pod, r.node.name, self.demands[r.demand].key,
                                           "moved: spare room on a GPU in use is cheaper than its CPU cores"))
            r.pod = None
        self._place_in_room(r, slot, cand)
        r.reason = f"{cand.shape.describe()} in spare room of a GPU already in use (cheaper than CPU cores)"
        return True
    def _place_in_room(self, r: Rep, slot: GpuSlot, cand: Candidate) -> None:
        """Put ``r`` as ``cand``'s slice on ``slot``: a free instance of a fixed layout, or added
        content of a planned one."""
        r.shape, r.node, r.gpus = cand.shape, slot.node, [slot]
        if slot.state is GpuState.FIXED:
            r.start = self.state.take_fixed(slot, cand.shape.profile)
            r.fixed = True
        else:
            self.state.add_content(slot, cand.shape.profile)
            r.start, r.fixed = None, False
    @staticmethod
    def _fit_in_place_of(g: GpuSlot, victim: Rep, mig_cands: Sequence[Candidate]) -> Candidate | None:
        """The first of ``mig_cands`` whose slice fits on ``g`` once ``victim``'s slice is gone."""
        base = dict(g.key)
        base[victim.shape.profile] -= 1
        key = mig.counts_key(base)
        return next((c for c in mig_cands if c.shape.product == g.product
                     and mig.add(g.product, key, c.shape.profile) is not None), None)

    def _attach(self, r: Rep) -> None:
        """Re-apply ``r``'s recorded placement to the state (inverse of :meth:`_detach`)."""
        if r.shape.kind is ShapeKind.CPU:
            r.node.cpu_free -= r.shape.cpu_millis
            r.node.mem_free -= r.shape.memory_mib
            return
        for slot in r.gpus:
            self._attach_slot(slot, r)
    def _attach_slot(self, slot: GpuSlot, r: Rep) -> None:
        """Put ``r`` (a whole-GPU, fixed-slice or planned-slice replica) back on one GPU slot."""
        st = self.state
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
    def _detach(self, r: Rep) -> None:
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
    def _reattach(self, slot: GpuSlot, reps: list[Rep]) -> None:
        for r in reps:
            self._attach_slot(slot, r)
    def _relocate(self, r: Rep, budget: float) -> float | None:
        """Move ``r`` to spare room (cost 0) or CPU (its price); ``None`` if neither fits."""
        i = r.demand
        spot_ok = self._may_use_spot(r)  # never breach min_off_spot
        spots = (False, True) if spot_ok else (False,)
        room = self._best_room(i, self._mig_cands(i), spots, exclude=None)
        if room is not None:
            _, slot, cand = room
            self._place_in_room(r, slot, cand)
            r.reason = f"{cand.shape.describe()} in spare room of a GPU already in use (packed to free a GPU)"
            return 0.0
        for cand in self.cands[i]:
            if cand.shape.kind is not ShapeKind.CPU:
                continue
            price = self.snapshot.cpu_price * cand.shape.cpu_millis / 1000
            if price >= budget:
                continue
            node = next(self.state.cpu_fit(cand.shape.cpu_millis, cand.shape.memory_mib, spot_ok,
                                           self._admit(i, ShapeKind.CPU)), None)
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
    def _open_for(self, r: Rep, budget: float, spot_ok: bool) -> float | None:
        """Last resort of a move: a fresh GPU (MIG slice or whole) cheaper than ``budget``."""
        best: tuple[float, int, Group, Candidate] | None = None
        admit = self._admit(r.demand, ShapeKind.GPU)
        for ci, cand in enumerate(self.cands[r.demand]):
            shape = cand.shape
            if shape.kind is ShapeKind.CPU or (shape.kind is ShapeKind.GPU and shape.gpus != 1):
                continue
            is_mig = shape.kind is ShapeKind.MIG
            for g in self.state.groups_by_product.get(shape.product, []):
                if ((g.key[2] and not spot_ok) or (is_mig and not g.key[3]) or g.key[1] >= budget - 1e-9
                        or g.key[4] not in admit):
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
            slot = min(slots, key=lambda s: (layout_rank(s, cand.shape.profile), s.index))
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
        return self._ruin(victims)

    def _ruin(self, victims: list[Rep]) -> bool:
        """Take ``victims`` out, re-place them greedily (two orders), keep the cheaper result."""
        if not victims or any(r.pod is not None or len(r.gpus) > 1 for r in victims):
            return False
        group = list({id(g): g for r in victims for g in r.gpus}.values())
        before = {id(sl): sl.ours for sl in group}
        old_cpu = sum(self._rep_cost(r) for r in victims if r.shape.kind is ShapeKind.CPU)
        saved = [(r, fields(r)) for r in victims]
        for r in victims:
            self._detach(r)
            self._remove_rep(r)
        counts: dict[int, int] = {}
        for r in victims:
            counts[r.demand] = counts.get(r.demand, 0) + 1
        if self._recreate(counts, group, before, old_cpu, reverse=False):
            return True
        if self._recreate(counts, group, before, old_cpu, reverse=True):
            return True
        for r, old in saved:
            restore(r, old)
            self._attach(r)
            self._add_rep(r)
        return False

    def _demand_lns(self, budget: list[int]) -> bool:
        """Ruin and recreate every replica of two models at once (pairs by cost, dearest first):
        undoes choices of product and shape that the GPU-by-GPU moves cannot reach."""
        cost: dict[int, float] = {}
        for r in self.reps.values():
            cost[r.demand] = cost.get(r.demand, 0.0) + self._rep_cost(r)
        order = sorted((i for i in cost if self.demands[i].strategy is Strategy.COST), key=lambda i: (-cost[i], i))
        changed = False
        for a in range(len(order)):
            for b in range(a + 1, len(order)):
                if budget[0] <= 0:
                    return changed
                budget[0] -= 1
                victims = [r for i in (order[a], order[b]) for r in self.by_demand.get(i, ())]
                if self._ruin(list(victims)):
                    changed = True
        return changed

    def _recreate(
        self, counts: dict[int, int], group: list[GpuSlot], before: dict[int, int], old_cpu: float, reverse: bool
    ) -> bool:
        """Re-place the ruined replicas (largest first, or smallest first); keep if cheaper."""
        ok = True
        self.capture = []
        for i in sorted(counts, key=self._size_key, reverse=reverse):
            if self._place_demand(i, counts[i]):
                ok = False
                break
        new, self.capture = self.capture, None
        delta = -old_cpu
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
    def _try_downgrade(self, slot: GpuSlot, reps: list[Rep]) -> bool:
        """Repack a MIG GPU onto a cheaper free GPU; replicas that do not fit there may spill to
        spare room or CPU, as long as the total is still cheaper than keeping this GPU."""
        spot_ok = self._group_may_use_spot(reps)
        admits = [self._admit(i, ShapeKind.MIG) for i in sorted({r.demand for r in reps})]
        targets = sorted(
            (g for g in self.state.groups.values()
             if g.key[3] and g.key[1] < slot.price - 1e-6 and (spot_ok or not g.key[2])
             and all(g.key[4] in a for a in admits)),
            key=lambda g: (g.key[1], group_sort(g)),
        )
        ordered = sorted(reps, key=lambda r: (-self._units(r.shape), r.demand))
        for g in targets:
            product = g.key[0]
            node = g.best_fit(1)
            if node is None:
                continue
            key: mig.Counts = ()
            packed: list[tuple[Rep, Candidate]] = []
            spill: list[Rep] = []
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
        self, slot: GpuSlot, reps: list[Rep], node: NodeState, packed: list[tuple[Rep, Candidate]],
        spill: list[Rep], price: float,
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
        moved: list[Rep] = []
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
