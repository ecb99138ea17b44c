"""Planning across cycles: a full solve when the cluster changed, a re-plan when only demands did.

A full solve of a big cluster takes about a second; after one pool changes, and when the cluster
is exactly the last plan carried out, :meth:`~gpupool_operator.core.solver.Planner.replan` on the
kept planner gives what a full solve would keep, in a fraction of the time. :class:`Planning`
decides which applies and remembers what "the last plan carried out" must look like
(:class:`_Epoch`). Purely computational: it holds memory, not I/O; the time is passed in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gpupool_operator.core.demand import Demand, ShapeKind
from gpupool_operator.core.inventory import Holding, Node, Snapshot
from gpupool_operator.core.plan import Assignment, Plan
from gpupool_operator.core.solver import Options, Planner

__all__ = ["Planning"]

Sig = tuple[str, str, tuple[int, ...], "tuple[int, str, int] | None"]


def _assignment_sig(a: Assignment) -> Sig:
    """What the snapshot's holding of the pod running ``a`` looks like (owner, node, GPUs, instance)."""
    if a.shape.kind is ShapeKind.MIG and a.gpus and a.start is not None:
        return (a.demand, a.node, (), (a.gpus[0], a.shape.profile, a.start))
    return (a.demand, a.node, tuple(sorted(a.gpus)), None)


@dataclass
class _Epoch:
    """Planning since the last full solve: the :class:`Planner` that made it, and what the cluster
    must look like for its plan to count as applied (then only demands can have changed).

    * ``bases``: every node as parsed without holdings at the full solve (identity compared);
    * ``expected``: our pods the plan runs on, pod -> (demand, node, GPUs, MIG instance);
    * ``foreign``: holdings the plan must work around, not ours (terminating pods included);
    * ``stopped``: our pods the epoch stopped (or found stopping): their holdings are not compared.
    """

    planner: Planner
    bases: dict[str, Node]
    cpu_price: float
    avoid: Hashable
    demands: tuple[Demand, ...]
    plan: Plan
    started: float
    expected: dict[str, Sig] = field(default_factory=dict)
    foreign: frozenset[tuple[str, Holding]] = frozenset()
    stopped: set[str] = field(default_factory=set)
    applied: Plan | None = None  # the plan ``expected`` was computed from

    def observe(self, snapshot: Snapshot) -> tuple[dict[str, Sig], frozenset[tuple[str, Holding]]]:
        ours: dict[str, Sig] = {}
        foreign: set[tuple[str, Holding]] = set()
        for node in snapshot.nodes:
            for h in node.holdings:
                if h.pod in self.stopped:
                    continue
                if h.owner is None:
                    foreign.add((node.name, h))
                else:
                    ours[h.pod] = (h.owner, node.name, tuple(sorted(h.gpus)), h.instance)
        return ours, frozenset(foreign)

    def holds(self, snapshot: Snapshot, bases: Mapping[str, Node], avoid: Hashable) -> str | None:
        """Why the cluster is not (yet) this epoch's plan applied; ``None`` when it is."""
        if avoid != self.avoid or snapshot.cpu_price != self.cpu_price:
            return "refused capacity or prices changed"
        if len(bases) != len(self.bases) or any(self.bases.get(n) is not b for n, b in bases.items()):
            return "nodes changed"
        ours, foreign = self.observe(snapshot)
        if ours != self.expected:
            return "replicas differ from the plan"
        if foreign != self.foreign:
            return "other pods changed"
        return None

    def carried_out(self, plan: Plan, created: Mapping[tuple[str, int], str], stopped: Iterable[str]) -> Plan:
        """``plan`` once its new replicas run as ``created`` and its evictions are under way."""
        self.stopped.update(e.pod for e in plan.evictions)
        self.stopped.update(stopped)
        self.planner.adopt(created)
        assignments = tuple(
            dataclasses.replace(a, pod=created[(a.demand, a.replica)])
            if a.pod is None and (a.demand, a.replica) in created else a
            for a in plan.assignments
        )
        self.expected = {a.pod: _assignment_sig(a) for a in assignments if a.pod is not None}
        for pod in self.stopped:
            self.expected.pop(pod, None)
        self.plan = self.applied = dataclasses.replace(plan, assignments=assignments, evictions=())
        return self.plan


class Planning:
    """One plan per cycle: ``cached`` (nothing it depends on changed), ``kept`` (the cluster is the
    last plan applied and demands are the same), ``replan`` (only demands changed) or ``full``.

    A full solve runs at least every ``resync_s``, when the caller asks (``full``: a MIG policy
    that cuts plans after solving, a cycle that could not carry out its plan), and whenever the
    cluster is anything but the last plan carried out.
    """

    def __init__(self, options: Options, resync_s: float) -> None:
        self.options = options
        self.resync_s = resync_s
        self.epoch: _Epoch | None = None
        self.full_next = True
        self.last: tuple[Hashable, Plan] | None = None  # (inputs, plan) of the last plan

    def reset(self) -> None:
        """Forget everything (a new term as leader starts from a fresh list)."""
        self.epoch, self.last, self.full_next = None, None, True

    def plan(self, key: Hashable, snapshot: Snapshot, bases: Mapping[str, Node], demands: Sequence[Demand],
             avoid: Hashable, incremental: bool, terminating: Iterable[str], now: float) -> tuple[Plan, str]:
        wanted = tuple(demands)
        epoch = self.epoch
        if not self.full_next and self.last is not None and self.last[0] == key and (
                epoch is None or epoch.demands == wanted):
            return self.last[1], "cached"
        plan, mode = self._plan(snapshot, bases, demands, avoid, incremental, terminating, now)
        self.last = (key, plan)
        self.full_next = False
        return plan, mode

    def _plan(self, snapshot: Snapshot, bases: Mapping[str, Node], demands: Sequence[Demand], avoid: Hashable,
              incremental: bool, terminating: Iterable[str], now: float) -> tuple[Plan, str]:
        epoch = self.epoch
        if epoch is not None and incremental and not self.full_next:
            why = "periodic full solve" if now - epoch.started > self.resync_s else epoch.holds(snapshot, bases, avoid)
            if why is None:
                wanted = tuple(demands)
                if wanted == epoch.demands:
                    return epoch.plan, "kept"
                plan = epoch.planner.replan(demands)
                epoch.demands, epoch.plan = wanted, plan
                return plan, "replan"
        self.epoch = None  # its planner's working state goes before the next one is built
        planner = Planner(snapshot, self.options)
        plan = planner.plan(demands)
        if incremental:
            epoch = _Epoch(planner, dict(bases), snapshot.cpu_price, avoid, tuple(demands), plan, now,
                           stopped=set(terminating))
            epoch.foreign = epoch.observe(snapshot)[1]
            self.epoch = epoch
        return plan, "full"

    def carried_out(self, plan: Plan, created: Mapping[tuple[str, int], str], stopped: Sequence[str],
                    failed: bool) -> Plan:
        """Tell the epoch what the cycle carried out of ``plan``; returns the plan as now applied."""
        if failed:  # something could not be done as planned: plan afresh from what exists
            self.full_next = True
        epoch = self.epoch
        if epoch is None or plan is not epoch.plan:
            return plan
        if plan is epoch.applied and not created and epoch.stopped.issuperset(stopped):
            return plan  # already applied, and nothing new was carried out
        applied = epoch.carried_out(plan, created, stopped)
        if self.last is not None and self.last[1] is plan:
            self.last = (self.last[0], applied)
        return applied
