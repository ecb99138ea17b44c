"""Kicks: the solver's iterated local search on top of the repair moves.

Every repair move (:mod:`~gpupool_operator.core.repair`) is accepted only when it strictly lowers
the cost, so the search stops in a plan that no single move improves, even where two steps would:
on a cluster whose on-demand GPUs also hold replicas that could run on spot, freeing an on-demand
GPU first costs more (those replicas need a new spot GPU, the ones that must stay on demand a
smaller on-demand GPU) and only then saves (the smaller GPU's spare room empties a spot GPU).

A kick takes that step on a copy of the working state: it empties one or two GPUs, forbids them,
re-places their replicas with the greedy rules (the cost may rise), lets the repair moves run again
from there, and the copy replaces the plan only when it ends cheaper than the plan was, with no
replica fewer placed. GPUs are kicked dearest first (the fullest of equal price last), alone and
paired with the next ones of that order. The number of kicks is a count (:attr:`Options.kicks`),
not a time limit: the core has no clock.
"""

from __future__ import annotations

import copy
from typing import Any, Self

from gpupool_operator.core.demand import ShapeKind
from gpupool_operator.core.repair import Repair
from gpupool_operator.core.state import GpuSlot, GpuState

__all__ = ["Kick"]

#: Partners per kicked GPU: it is kicked alone and with each of the next this many GPUs.
PARTNERS = 3
#: Ruin-and-recreate attempts of the repairs after one kick (no model-pair ones: they cost the
#: most and, on the quality suite, found nothing more after a kick).
KICK_REPAIRS = 20


class Kick(Repair):
    def kick_pass(self, kicks: int) -> bool:
        """Try up to ``kicks`` kicks; adopt each one that ends cheaper and start over from it."""
        improved = False
        while kicks > 0:
            base = self.standing()
            for group in self._kick_groups():
                if kicks <= 0:
                    break
                kicks -= 1
                trial = self.copy()
                if trial._kick([trial.state.gpus[o] for o in group]) and _better(trial.standing(), base):
                    self._adopt(trial)
                    improved = True
                    break
            else:
                break
        return improved

    def _kick_groups(self) -> list[tuple[int, ...]]:
        """The GPUs to kick, as tuples of GPU orders: every GPU the plan pays for whose replicas
        may all move (plan-only, one GPU each, Cost strategy), dearest first and, at equal price,
        the least filled first; each alone, then with each of the next :data:`PARTNERS`."""
        self._reindex()
        on = self._units_on()
        slots = {s.order: s for s in self.state.gpus}
        movable = [
            o for o, reps in on.items()
            if slots[o].state in (GpuState.PLANNED, GpuState.WHOLE) and slots[o].ours == len(reps)
            and all(r.pod is None for r in reps)
        ]
        movable.sort(key=lambda o: (-slots[o].price, self._fill_of(on[o]), o))
        out: list[tuple[int, ...]] = []
        for pos, o in enumerate(movable):
            out.append((o,))
            out += [(o, p) for p in movable[pos + 1:pos + 1 + PARTNERS]]
        return out

    def _kick(self, slots: list[GpuSlot]) -> bool:
        """Empty ``slots`` (this is a copy), re-place their replicas elsewhere, repair again.
        ``False`` when some replica found no other place (the copy is then dropped)."""
        self._reindex()
        ids = {id(s) for s in slots}
        victims = list({id(r): r for s in slots for r in self._reps_on(s) if any(id(g) in ids for g in r.gpus)}
                       .values())
        if not victims or any(r.pod is not None or len(r.gpus) > 1 or not self._movable(r) for r in victims):
            return False
        counts: dict[int, int] = {}
        for r in victims:
            self._detach(r)
            self._remove_rep(r)
            counts[r.demand] = counts.get(r.demand, 0) + 1
        if any(s.state is not GpuState.FREE for s in slots):
            return False  # something we do not move still holds it
        for s in slots:  # forbidden while their replicas are re-placed
            self.state.take_free(s.node, s)
            s.state = GpuState.OFF
        left = 0
        for i in sorted(counts, key=self._size_key):
            left += self._place_demand(i, counts[i])
        for s in slots:
            self.state.release_free(s)
        if left:
            return False
        self._improve([KICK_REPAIRS], [0])
        return True

    def standing(self) -> tuple[int, float]:
        """Where the working state stands, as the portfolio ranks plans: minus the replicas placed,
        then $/h of the GPUs paid for and the CPU cores plus the move penalty per running replica
        moved (rounded as the plan's cost is: no float noise wins)."""
        gpus = sum(s.price for s in self.state.gpus if s.ours > 0)
        cpu = sum(self._rep_cost(r) for r in self.reps.values() if r.shape.kind is ShapeKind.CPU)
        moved = sum(1 for e in self.evictions if e.reason.startswith("moved"))
        return -len(self.reps), round(round(gpus + cpu, 6) + self.options.move_penalty * moved, 6)

    def copy(self) -> Self:
        """A deep copy of the working state; the inputs (snapshot, demands, candidates) are shared."""
        memo: dict[int, Any] = {}
        for shared in (self.snapshot, self.demands, self.cands, self.rejected, self.products, self.options,
                       self.variant, self.index, self.__dict__.get("_admit_memo"), self.__dict__.get("_mig_memo")):
            if shared is not None:
                memo[id(shared)] = shared
        for node in self.snapshot.nodes:
            memo[id(node)] = node
        trial = copy.deepcopy(self, memo)
        trial.reps = {id(r): r for r in trial.reps.values()}  # keyed by identity: new objects, new keys
        return trial

    def _adopt(self, trial: Self) -> None:
        """Take over ``trial``'s working state (it is not used again)."""
        self.__dict__.update(trial.__dict__)


def _better(new: tuple[int, float], old: tuple[int, float]) -> bool:
    return new[0] < old[0] or (new[0] == old[0] and new[1] < old[1] - 1e-6)
