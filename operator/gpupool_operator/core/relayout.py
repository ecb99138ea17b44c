"""MIG re-layouts by NVIDIA's protocol, without deadlock: which GPUs may be re-laid, and each node's next step.

NVIDIA's MIG manager applies the ``nvidia.com/mig.config`` label's entry of its mig-parted
ConfigMap and alone reports ``nvidia.com/mig.config.state`` (pending, rebooting, success, failed).
It re-creates every instance of a GPU whose layout changes, so a pod on that GPU dies with it. Hence:

* :func:`restrict` cuts from the plan every change of a GPU the plan keeps pods on, or another
  party's pod may sit on, or the policy forbids (their new replicas are reported unplaced): the
  plan never keeps pods on a GPU it re-lays, and nothing waits behind a gate for a change that
  cannot start;
* :func:`node_step` walks one node through intent -> label (once no pod is bound to the changed
  GPUs) -> pending seen -> success (commit) | failed | timeout (abandon: the waiting replicas are
  stopped, the label rolled back, the node kept out of MIG plans for a cool-down, then retried).

A purely computational module with no side-effects: the time is passed in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from gpupool_operator.core.mig import Placement, placement_counts
from gpupool_operator.core.migparted import config_name
from gpupool_operator.core.observed import ForeignPod, MigNode, PerGpu, Replica, changed_gpus, per_gpu
from gpupool_operator.core.plan import Assignment, LayoutChange, Plan, Unplaced
from gpupool_operator.core.reasons import UnplacedCode

__all__ = [
    "IN_PROGRESS",
    "MigRules",
    "Step",
    "StepKind",
    "new_target",
    "node_step",
    "planned_targets",
    "restrict",
]

IN_PROGRESS = ("pending", "rebooting")


@dataclass(frozen=True, slots=True)
class MigRules:
    """How re-layouts are allowed and timed (GPUPoolConfig ``mig`` and the operator's settings)."""

    timeout_s: float = 600.0
    """A re-layout not finished this long after it was asked for is abandoned."""
    cooldown_s: float = 1800.0
    """A node whose re-layout failed or timed out takes no MIG re-layout for this long."""
    disabled: bool = False
    """``mig.policy: Disabled``: never re-lay a GPU (existing slices and whole GPUs are still used)."""
    allowed: tuple[str, ...] | None = None
    """``mig.policy: AllowList``: the mig-parted config names that may be set (``None``: any)."""


def _counts(p: Placement | None) -> tuple[tuple[str, int], ...]:
    return () if p is None else placement_counts(p)


def new_target(node: MigNode, changes: Iterable[LayoutChange]) -> PerGpu:
    """The node's per-GPU layout once ``changes`` are applied on top of its current one."""
    empty: tuple[tuple[str, int], ...] = ()
    base = list(node.current) if node.current is not None and len(node.current) == node.gpu_count \
        else [empty for _ in range(node.gpu_count)]
    for change in changes:
        if 0 <= change.gpu < len(base):
            base[change.gpu] = _counts(change.after)
    return tuple(base)


def _foreign_may_hold(pod: ForeignPod, before: tuple[tuple[str, int], ...] | None) -> bool:
    """Whether another party's pod may sit on a GPU laid out as ``before`` (``None``: unknown).
    Kubernetes does not say which GPU a device is, so every GPU it could be on counts."""
    if before is None:
        return pod.whole_gpus > 0 or bool(pod.mig_profiles)
    if not before:
        return pod.whole_gpus > 0
    profiles = {p.replace("+", ".") for p, _ in before}
    return any(p.replace("+", ".") in profiles for p in pod.mig_profiles)


def restrict(plan: Plan, nodes: Mapping[str, MigNode], foreign: Sequence[ForeignPod], rules: MigRules,
             now: float, named: Mapping[str, Mapping[str, PerGpu]] | None = None) -> tuple[Plan, dict[str, str]]:
    """``plan`` without the MIG changes that must not happen now, and why per node.

    A change is cut when the policy forbids it, when the node is still busy with (or cooling
    down from) another re-layout, or when the GPU holds a replica the plan keeps or may hold
    another party's pod. New replicas that needed a cut change are reported unplaced.
    """
    if not plan.layout_changes:
        return plan, {}
    kept_on: dict[str, set[int]] = {}
    for a in plan.assignments:
        if a.pod is not None:
            kept_on.setdefault(a.node, set()).update(a.gpus)
    foreign_on: dict[str, list[ForeignPod]] = {}
    for pod in foreign:
        foreign_on.setdefault(pod.node, []).append(pod)
    by_node: dict[str, list[LayoutChange]] = {}
    for c in plan.layout_changes:
        by_node.setdefault(c.node, []).append(c)
    cut: set[tuple[str, int]] = set()
    why: dict[str, str] = {}
    for name, changes in by_node.items():
        node = nodes.get(name)
        reason = _node_refusal(node, changes, rules, now, (named or {}).get(name, {}))
        if reason is not None:
            cut.update((name, c.gpu) for c in changes)
            why[name] = reason
            continue
        assert node is not None
        for c in changes:
            if c.gpu in kept_on.get(name, set()):
                cut.add((name, c.gpu))
                why[name] = f"GPU {c.gpu} of {name} keeps running replicas, so its MIG re-layout waits"
            elif any(_foreign_may_hold(p, _counts(c.before)) for p in foreign_on.get(name, ())):
                cut.add((name, c.gpu))
                why[name] = f"GPU {c.gpu} of {name} may hold another workload's pod, so its MIG re-layout waits"
    if not cut:
        return plan, {}
    kept: list[Assignment] = []
    lost: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for a in plan.assignments:
        if a.pod is None and any((a.node, g) in cut for g in a.gpus):
            lost[a.demand] = lost.get(a.demand, 0) + 1
            reasons.setdefault(a.demand, why[a.node])
        else:
            kept.append(a)
    unplaced = list(plan.unplaced) + [Unplaced(d, n, f"no free capacity without a MIG re-layout: {reasons[d]}",
                                               code=UnplacedCode.INSUFFICIENT_CAPACITY)
                                      for d, n in sorted(lost.items())]
    remaining = tuple(c for c in plan.layout_changes if (c.node, c.gpu) not in cut)
    return dataclasses.replace(plan, assignments=tuple(kept), layout_changes=remaining,
                               unplaced=tuple(unplaced)), why


def _node_refusal(node: MigNode | None, changes: Sequence[LayoutChange], rules: MigRules, now: float,
                  named: Mapping[str, PerGpu]) -> str | None:
    if node is None:
        return "the node is gone"
    if rules.disabled:
        return "MIG re-layout is not allowed (GPUPoolConfig mig.policy Disabled)"
    if node.target is not None:
        return f"{node.name} is still being re-laid out"
    if node.failed_at is not None and now - node.failed_at < rules.cooldown_s:
        return f"the last MIG re-layout of {node.name} failed; retried after a cool-down"
    if node.state in IN_PROGRESS:
        return f"NVIDIA's MIG manager is reconfiguring {node.name}"
    if rules.allowed is not None and config_name(new_target(node, changes), named) is None:
        allowed = ", ".join(rules.allowed)
        return f"the layout {node.name} would need is none of GPUPoolConfig mig.allowedLayouts ({allowed})"
    return None


class StepKind(StrEnum):
    WAIT = "wait"
    RECORD = "record"  # record the target: its GPUs still hold pods
    REQUEST = "request"  # write the layout and set the label
    SEEN = "seen"  # the MIG manager took the request (pending/rebooting): remember it
    COMMIT = "commit"  # applied: the target is the layout now
    ABANDON = "abandon"  # failed or timed out


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    node: str
    target: PerGpu | None = None
    config: str = ""  # the label to set (REQUEST), or to roll back to (ABANDON; "" = leave it)
    reason: str = ""
    victims: tuple[Replica, ...] = ()  # replicas waiting behind the gate that an abandon stops
    wake_at: float | None = None  # when this node must be looked at again without an event


def _blockers(node: MigNode, changed: frozenset[int], replicas: Sequence[Replica],
              foreign: Sequence[ForeignPod]) -> list[str]:
    """Pods bound to GPUs a re-layout would destroy: ours on a changed GPU (terminating ones
    included), or another party's that may sit on one."""
    out = [r.key for r in replicas if r.bound and not r.finished and r.holds_gpu and r.gpus & changed]
    current = node.current if node.current is not None and len(node.current) == node.gpu_count else None
    for pod in foreign:
        if any(_foreign_may_hold(pod, current[g] if current is not None else None) for g in changed):
            out.append(pod.key)
    return out


def node_step(node: MigNode, planned: PerGpu | None, replicas: Sequence[Replica], foreign: Sequence[ForeignPod],
              rules: MigRules, now: float, named: Mapping[str, PerGpu] | None = None) -> Step:
    """The next step of ``node``'s re-layout (``planned``: a new target from this cycle's plan).

    ``replicas``/``foreign`` are the pods on the node; ``named`` the layouts AllowList names give it.
    """
    target = node.target if node.target is not None else planned
    if target is None:
        return Step(StepKind.WAIT, node.name)
    if node.target is not None and node.since is None:  # recorded without a time: start its clock now
        return Step(StepKind.RECORD, node.name, target, reason="timing the re-layout from now")
    changed = changed_gpus(node.current, target)
    want = config_name(target, named)
    since = node.since if node.target is not None and node.since is not None else now
    deadline = since + rules.timeout_s
    gated = tuple(r for r in replicas if r.mig_gated and not r.deleting and r.gpus & changed)
    if want is None:
        return Step(StepKind.ABANDON, node.name, target, reason="the layout is not in mig.allowedLayouts",
                    victims=gated)
    if node.target is None or node.config != want:  # not asked for yet
        blockers = _blockers(node, changed, replicas, foreign)
        if not blockers:
            return Step(StepKind.REQUEST, node.name, target, config=want,
                        reason=f"GPUs {sorted(changed)} free; asking for {want}")
        if now >= deadline:
            return Step(StepKind.ABANDON, node.name, target, reason=(
                f"GPUs {sorted(changed)} did not become free within {rules.timeout_s:.0f}s "
                f"(held by {', '.join(blockers[:3])})"), victims=gated)
        kind = StepKind.RECORD if node.target is None else StepKind.WAIT
        return Step(kind, node.name, target, reason=f"waiting for {', '.join(blockers[:5])}", wake_at=deadline)
    request = node.request
    progressed = request is not None and (request.seen or node.state != request.state_then)
    rollback = node.previous if node.previous and node.previous != want else ""
    if node.state in IN_PROGRESS:
        kind = StepKind.SEEN if request is not None and not request.seen else StepKind.WAIT
        return Step(kind, node.name, target, wake_at=deadline)
    applied = node.state in (None, "success") and node.allocatable_matches(target)
    evidence = node.current is not None and not node.allocatable_matches(node.current)
    if applied and (progressed or evidence or now >= deadline):
        return Step(StepKind.COMMIT, node.name, target, config=want)
    if node.state == "failed" and (progressed or request is None):
        return Step(StepKind.ABANDON, node.name, target, config=rollback,
                    reason=f"NVIDIA's MIG manager failed to apply {want}", victims=gated)
    if now >= deadline:
        return Step(StepKind.ABANDON, node.name, target, config=rollback, victims=gated, reason=(
            f"{want} was not applied within {rules.timeout_s:.0f}s (state {node.state or 'unset'})"))
    return Step(StepKind.WAIT, node.name, target, wake_at=deadline)


def planned_targets(plan: Plan, nodes: Mapping[str, MigNode]) -> dict[str, PerGpu]:
    """Per node without a re-layout in progress: the target this plan's changes make."""
    by_node: dict[str, list[LayoutChange]] = {}
    for c in plan.layout_changes:
        by_node.setdefault(c.node, []).append(c)
    out: dict[str, PerGpu] = {}
    for name, changes in sorted(by_node.items()):
        node = nodes.get(name)
        if node is None or node.target is not None:
            continue
        target = new_target(node, changes)
        base = node.current if node.current is not None and len(node.current) == node.gpu_count \
            else per_gpu([{} for _ in range(node.gpu_count)])
        if target != base:
            out[name] = target
    return out
