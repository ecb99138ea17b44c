"""The decide stage: from the plan and what was observed, the list of writes that takes the cluster there.

``actions(plan)`` is the core of it (stop evicted pods, re-lay GPUs, start new replicas); on top,
this module decides what the plan cannot know: which MIG re-layouts may start now and where each
node is in NVIDIA's protocol (:mod:`~gpupool_operator.core.relayout`), which replicas are lost
(finished, node gone, refused by kube-scheduler for too long, drained off a cordoned node once the
others serve), the names of new replicas and whether they wait behind the MIG gate, which gates
can go, and which Services are missing or hand-edited. Pools held back after refused writes get
no writes. A purely computational function with no side-effects: the time is part of the input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gpupool_operator.core.naming import pod_name
from gpupool_operator.core.observed import (
    ForeignPod,
    MigNode,
    PerGpu,
    PoolRef,
    Replica,
    ServiceFact,
    changed_gpus,
)
from gpupool_operator.core.plan import Action, ActionKind, Plan, actions
from gpupool_operator.core.relayout import MigRules, Step, StepKind, node_step, planned_targets, restrict

__all__ = ["Decision", "Rules", "Situation", "decide"]


@dataclass(frozen=True, slots=True)
class Rules:
    unschedulable_grace_s: float = 60.0
    """How long kube-scheduler may refuse a replica before it is stopped and placed elsewhere."""
    mig: MigRules = field(default_factory=MigRules)


@dataclass(frozen=True)
class Situation:
    """Everything one decision is computed from."""

    now: float
    plan: Plan
    desired: Mapping[str, int]  # demand -> replicas wanted
    pools: Mapping[str, PoolRef]
    replicas: Sequence[Replica]
    foreign: Sequence[ForeignPod]
    mig_nodes: Mapping[str, MigNode]
    nodes: frozenset[str]  # every node that exists
    schedulable: frozenset[str]
    services: Sequence[ServiceFact] = ()
    pod_keys: frozenset[str] = frozenset()  # every pod name in use (namespace/name)
    held_back: frozenset[str] = frozenset()  # pools backing off after refused writes
    named: Mapping[str, Mapping[str, PerGpu]] = field(default_factory=dict)  # AllowList layouts per node
    rules: Rules = field(default_factory=Rules)


@dataclass(frozen=True)
class Decision:
    plan: Plan  # the plan as it will be carried out (MIG changes that must wait cut out)
    actions: tuple[Action, ...]
    refused: tuple[str, ...] = ()  # replicas kube-scheduler refused: their capacity is avoided a while
    wake_at: float | None = None  # look again then, even without an event
    waits: Mapping[str, str] = field(default_factory=dict)  # node -> why its MIG change waits


def decide(s: Situation) -> Decision:
    """The writes of one cycle, in the order they must happen (MIG steps, stops, starts, services,
    ungates); the act stage runs each group concurrently."""
    plan, waits = restrict(s.plan, s.mig_nodes, s.foreign, s.rules.mig, s.now, s.named)
    on_node: dict[str, list[Replica]] = {}
    for r in s.replicas:
        if r.node:
            on_node.setdefault(r.node, []).append(r)
    foreign_on: dict[str, list[ForeignPod]] = {}
    for p in s.foreign:
        foreign_on.setdefault(p.node, []).append(p)
    planned = planned_targets(plan, s.mig_nodes)
    steps = [node_step(node, planned.get(name), on_node.get(name, ()), foreign_on.get(name, ()), s.rules.mig,
                       s.now, s.named.get(name) if s.rules.mig.allowed is not None else None)
             for name, node in sorted(s.mig_nodes.items()) if node.target is not None or name in planned]
    wakes = [st.wake_at for st in steps if st.wake_at is not None]
    out = [a for st in steps if (a := _mig_action(st)) is not None]
    out += [a for st in steps if st.kind is StepKind.ABANDON for a in _stop_victims(st)]
    targets = {st.node: st.target for st in steps
               if st.target is not None and st.kind in (StepKind.REQUEST, StepKind.RECORD, StepKind.WAIT,
                                                        StepKind.SEEN)}
    committed = {st.node: st.target for st in steps if st.kind is StepKind.COMMIT and st.target is not None}
    victims = {v.key for st in steps for v in st.victims}
    stops, refused, wake = _stops(s, plan, victims)
    if wake is not None:
        wakes.append(wake)
    out += stops
    out += _starts(s, plan, targets)
    out += _services(s)
    out += [a for a in _ungates(s, targets, committed) if a.pod not in victims]  # stopped, not let through
    held = [a for a in out if not (a.pool and a.pool in s.held_back)]
    return Decision(plan=plan, actions=tuple(held), refused=refused, wake_at=min(wakes, default=None),
                    waits=waits)


def _mig_action(st: Step) -> Action | None:
    kinds = {StepKind.REQUEST: ActionKind.SET_MIG_LAYOUT, StepKind.RECORD: ActionKind.RECORD_MIG_INTENT,
             StepKind.SEEN: ActionKind.MARK_MIG_SEEN, StepKind.COMMIT: ActionKind.COMMIT_MIG_LAYOUT,
             StepKind.ABANDON: ActionKind.ABANDON_MIG_LAYOUT}
    kind = kinds.get(st.kind)
    if kind is None:
        return None
    events = {ActionKind.SET_MIG_LAYOUT: "MigReconfigure", ActionKind.COMMIT_MIG_LAYOUT: "MigReconfigured",
              ActionKind.ABANDON_MIG_LAYOUT: "MigReconfigureFailed"}
    return Action(kind, st.node, target=st.target, config=st.config, reason=st.reason, event=events.get(kind, ""),
                  warning=kind is ActionKind.ABANDON_MIG_LAYOUT)


def _stop(r: Replica, event: str, reason: str, warning: bool = False) -> Action:
    return Action(ActionKind.STOP, r.node or "", r.demand, pod=r.key, pool=r.pool, uid=r.uid, event=event,
                  warning=warning, reason=reason)


def _stop_victims(st: Step) -> list[Action]:
    return [_stop(v, "MigReconfigureFailed", f"the MIG re-layout of {st.node} was abandoned ({st.reason}); "
                  "placing the replica again", warning=True) for v in st.victims]


def _stops(s: Situation, plan: Plan, victims: set[str]) -> tuple[list[Action], tuple[str, ...], float | None]:
    """Replicas to stop: evicted by the plan, finished, on a node that is gone, refused by
    kube-scheduler past the grace period, or on an unschedulable node once enough others serve."""
    by_key = {r.key: r for r in s.replicas}
    out: dict[str, Action] = {}
    for a in actions(plan):
        r = by_key.get(a.pod)
        if a.kind is ActionKind.STOP and r is not None and not r.deleting and r.key not in victims:
            out[r.key] = _stop(r, "Stopping", f"stopping replica on {a.node}: {a.reason}")
    refused: list[str] = []
    wake: float | None = None
    ready_elsewhere: dict[str, int] = {}
    draining: list[Replica] = []
    for r in s.replicas:
        if r.deleting or r.key in out or r.key in victims:
            continue
        if r.finished:
            out[r.key] = _stop(r, "ReplicaFinished", f"replica {r.key} ended ({r.phase})", warning=True)
        elif r.node not in s.nodes:
            out[r.key] = _stop(r, "NodeGone", f"node {r.node} of replica {r.key} is gone; placing it again",
                               warning=True)
        elif r.refused_since is not None and not r.bound and not r.gated:
            waited = s.now - r.refused_since
            if waited >= s.rules.unschedulable_grace_s:
                refused.append(r.key)
                out[r.key] = _stop(r, "Unschedulable", (
                    f"kube-scheduler refused replica {r.key.split('/', 1)[1]} on {r.node} for {waited:.0f}s "
                    f"({r.refused_message[:200]}); placing it elsewhere"), warning=True)
            else:
                at = r.refused_since + s.rules.unschedulable_grace_s + 0.5
                wake = at if wake is None else min(wake, at)
        elif r.node not in s.schedulable:
            draining.append(r)
        elif r.ready:
            ready_elsewhere[r.demand] = ready_elsewhere.get(r.demand, 0) + 1
    for r in draining:  # make before break: stop a cordoned node's replica once the others serve
        if ready_elsewhere.get(r.demand, 0) >= s.desired.get(r.demand, 0):
            out[r.key] = _stop(r, "Drained", f"replica moved off unschedulable node {r.node}")
    return list(out.values()), tuple(refused), wake


def _starts(s: Situation, plan: Plan, targets: Mapping[str, PerGpu]) -> list[Action]:
    """A START per new replica: the lowest free index of its model, gated when its GPU is in a
    re-layout still to be applied."""
    new = [a for a in actions(plan) if a.kind is ActionKind.START and a.assignment is not None]
    if not new:
        return []
    used: dict[str, set[int]] = {}
    for r in s.replicas:
        if r.index is not None:
            used.setdefault(r.demand, set()).add(r.index)
    out: list[Action] = []
    for a in new:
        assert a.assignment is not None
        namespace, pool_name, model = a.demand.split("/", 2)
        pool = s.pools.get(f"{namespace}/{pool_name}")
        if pool is None:
            continue
        taken = used.setdefault(a.demand, set())
        n = 0
        while n in taken or f"{namespace}/{pod_name(namespace, pool_name, pool.uid, model, n)}" in s.pod_keys:
            n += 1
        taken.add(n)
        target = targets.get(a.node)
        mig_node = s.mig_nodes.get(a.node)
        gated = target is not None and bool(
            set(a.assignment.gpus) & changed_gpus(mig_node.current if mig_node else None, target))
        name = pod_name(namespace, pool_name, pool.uid, model, n)
        out.append(Action(ActionKind.START, a.node, a.demand, pod=f"{namespace}/{name}", assignment=a.assignment,
                          pool=pool.key, replica=n, gated=gated, model=model, event="Placed"))
    return out


def _services(s: Situation) -> list[Action]:
    out: list[Action] = []
    for svc in s.services:
        if not svc.exists:
            out.append(Action(ActionKind.CREATE_SERVICE, pool=svc.pool, model=svc.model, pod=svc.key))
        elif svc.owned and not svc.matches:
            out.append(Action(ActionKind.REPAIR_SERVICE, pool=svc.pool, model=svc.model, pod=svc.key,
                              event="ServiceRepaired", warning=True,
                              reason=f"Service {svc.key} was edited: selector, ports and labels put back"))
    return out


def _ungates(s: Situation, targets: Mapping[str, PerGpu], committed: Mapping[str, PerGpu]) -> list[Action]:
    """Gated replicas whose node's layout is applied (state success, slices in allocatable)."""
    out: list[Action] = []
    for r in s.replicas:
        if not r.mig_gated or r.deleting or not r.node:
            continue
        node = s.mig_nodes.get(r.node)
        if node is None:
            continue
        current = committed.get(r.node, node.current)
        target = targets.get(r.node)
        if target is not None and r.gpus & changed_gpus(current, target):
            continue
        if (node.state or "success") != "success":
            continue
        if current is not None and not node.allocatable_matches(current):
            continue
        out.append(Action(ActionKind.UNGATE, r.node, r.demand, pod=r.key, pool=r.pool, uid=r.uid))
    return out
