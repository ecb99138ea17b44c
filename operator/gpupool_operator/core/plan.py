"""The result of one placement cycle, and the actions that take the cluster from now to it.

A :class:`Plan` is data: every replica's placement with its attributed cost and the reason for it,
replicas that could not be placed and why, per-GPU MIG layout changes, pods to stop. Its
:meth:`Plan.to_dict` form is the ``gpupool plan -o json`` schema (documented in the README).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gpupool_operator.core.demand import Shape
from gpupool_operator.core.mig import Placement, describe, placement_counts
from gpupool_operator.core.migparted import mig_parted_devices
from gpupool_operator.core.observed import PerGpu

SCHEMA_VERSION = "gpupool.io/plan/v1"


@dataclass(frozen=True, slots=True)
class Assignment:
    """One replica's place. ``gpus`` are whole GPUs, or the one GPU holding a MIG instance."""

    demand: str
    replica: int
    shape: Shape
    node: str
    gpus: tuple[int, ...] = ()
    start: int | None = None  # MIG instance start slot
    cost: float = 0.0  # USD/h attributed to this replica
    pod: str | None = None  # the running pod this replica keeps, if it stays
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Unplaced:
    demand: str
    count: int
    reason: str
    code: str = ""  # a condition reason (CamelCase): core.reasons.UnplacedCode


@dataclass(frozen=True, slots=True)
class LayoutChange:
    """A GPU's MIG layout before and after (``None`` = MIG disabled)."""

    node: str
    gpu: int
    before: Placement | None
    after: Placement | None
    config: str = ""  # the allowed mig-parted config that sets it (mig.policy AllowList), else ""


@dataclass(frozen=True, slots=True)
class Eviction:
    """A running pod the plan stops (moved elsewhere, or no longer needed)."""

    pod: str
    node: str
    demand: str
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    assignments: tuple[Assignment, ...]
    unplaced: tuple[Unplaced, ...] = ()
    layout_changes: tuple[LayoutChange, ...] = ()
    evictions: tuple[Eviction, ...] = ()
    cost_per_hour: float = 0.0  # GPUs holding our replicas (whole price) + CPU cores
    gpus_used: int = 0
    notes: tuple[str, ...] = ()
    cost_by_demand: Mapping[str, float] = field(default_factory=dict)

    @property
    def idle_cost_per_hour(self) -> float:
        """The part of the cost no replica is charged for: unused slices of GPUs the plan holds."""
        return max(0.0, self.cost_per_hour - sum(self.cost_by_demand.values()))

    def for_demand(self, key: str) -> tuple[Assignment, ...]:
        return tuple(a for a in self.assignments if a.demand == key)

    def to_dict(self) -> dict[str, Any]:
        """The JSON/YAML form (schema ``gpupool.io/plan/v1``); stable key order, rounded money."""
        return {
            "schema": SCHEMA_VERSION,
            "costPerHour": round(self.cost_per_hour, 4),
            "idleCostPerHour": round(self.idle_cost_per_hour, 4),
            "gpusUsed": self.gpus_used,
            "models": [
                {
                    "name": key,
                    "replicas": len(self.for_demand(key)),
                    "unplaced": sum(u.count for u in self.unplaced if u.demand == key),
                    "costPerHour": round(cost, 4),
                }
                for key, cost in sorted(self.cost_by_demand.items())
            ],
            "placements": [
                {
                    "model": a.demand,
                    "replica": a.replica,
                    "kind": a.shape.kind.value,
                    "shape": a.shape.describe(),
                    "product": a.shape.product or None,
                    "profile": a.shape.profile or None,
                    "node": a.node,
                    "gpus": list(a.gpus),
                    "migStart": a.start,
                    "resources": a.shape.resources(),
                    "costPerHour": round(a.cost, 4),
                    "keeps": a.pod,
                    "reason": a.reason,
                }
                for a in self.assignments
            ],
            "migChanges": [
                {
                    "node": c.node,
                    "gpu": c.gpu,
                    "before": _layout_json(c.before),
                    "after": _layout_json(c.after),
                    "summary": f"{describe(_counts(c.before))} -> {describe(_counts(c.after))}",
                }
                for c in self.layout_changes
            ],
            "evictions": [
                {"pod": e.pod, "node": e.node, "model": e.demand, "reason": e.reason} for e in self.evictions
            ],
            "unplaced": [{"model": u.demand, "count": u.count, "reason": u.reason, "code": u.code}
                         for u in self.unplaced],
            "notes": list(self.notes),
        }


def _counts(p: Placement | None) -> dict[str, int] | None:
    return None if p is None else dict(placement_counts(p))


def _layout_json(p: Placement | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"counts": dict(placement_counts(p)), "instances": [{"profile": n, "start": s} for n, s in p]}


class ActionKind(StrEnum):
    """One write the act stage makes. ``actions(plan)`` yields the first three; the decide stage
    (``core/decide.py``) adds the rest from what it observed."""

    SET_MIG_LAYOUT = "set-mig-layout"  # write the node's layout into mig-parted's config, label the node
    STOP = "stop"  # delete a pod
    START = "start"  # create a replica pod with the shape's resources, pinned to the node
    RECORD_MIG_INTENT = "record-mig-intent"  # note the target on the node while its GPUs still hold pods
    MARK_MIG_SEEN = "mark-mig-seen"  # the MIG manager took the request (pending/rebooting)
    COMMIT_MIG_LAYOUT = "commit-mig-layout"  # applied: the target is the node's layout now
    ABANDON_MIG_LAYOUT = "abandon-mig-layout"  # failed or timed out: roll back, cool down
    UNGATE = "ungate"  # remove the MIG scheduling gate of a replica whose slices exist now
    CREATE_SERVICE = "create-service"
    REPAIR_SERVICE = "repair-service"  # put back a Service's selector, ports or labels


@dataclass(frozen=True, slots=True)
class Action:
    """One write. ``pool`` (``namespace/name``) is the pool it is made for ("" = cluster-wide: a
    node's MIG step), so one pool's refused writes hold back only that pool."""

    kind: ActionKind
    node: str = ""
    demand: str = ""
    pod: str = ""  # namespace/name of the pod it stops, ungates or creates
    assignment: Assignment | None = None
    layouts: tuple[tuple[int, Placement | None], ...] = ()
    pool: str = ""
    uid: str = ""  # the pod's uid: a same-named successor is never hit
    replica: int = 0  # START: the replica index (its label; its name's suffix)
    gated: bool = False  # START: created behind the MIG scheduling gate
    config: str = ""  # the nvidia.com/mig.config value to set (or roll back to)
    target: PerGpu | None = None  # MIG steps: the node's per-GPU target layout
    model: str = ""  # START, services: the model
    event: str = ""  # the Event reason to record for it ("" = none)
    warning: bool = False  # the Event is a Warning
    reason: str = ""  # why, in words (Events, logs)


def actions(plan: Plan) -> tuple[Action, ...]:
    """The ordered steps from the observed cluster to ``plan`` (``plan - observed``).

    Order matters on real hardware: stop what moves off a GPU, then re-layout (MIG manager needs
    the GPU idle), then start new replicas. A purely computational function with no side-effects.
    """
    out: list[Action] = [Action(ActionKind.STOP, e.node, e.demand, pod=e.pod, reason=e.reason)
                         for e in plan.evictions]
    by_node: dict[str, list[tuple[int, Placement | None]]] = {}
    for change in plan.layout_changes:
        by_node.setdefault(change.node, []).append((change.gpu, change.after))
    out += [Action(ActionKind.SET_MIG_LAYOUT, node, layouts=tuple(ls)) for node, ls in sorted(by_node.items())]
    out += [Action(ActionKind.START, a.node, a.demand, assignment=a) for a in plan.assignments if a.pod is None]
    return tuple(out)


def mig_parted_config(layouts: tuple[tuple[int, Placement | None], ...]) -> list[dict[str, Any]]:
    """One node's layouts as a mig-parted ``mig-configs`` entry (devices grouped by layout)."""
    count = max((gpu for gpu, _ in layouts), default=-1) + 1
    per: list[tuple[tuple[str, int], ...] | None] = [None] * count
    for gpu, layout in layouts:
        per[gpu] = () if layout is None else placement_counts(layout)
    entries = mig_parted_devices(tuple(p for p in per if p is not None))
    index = [gpu for gpu, p in enumerate(per) if p is not None]
    for entry in entries:  # devices count the listed GPUs only: map back to their indices
        entry["devices"] = [index[d] for d in entry["devices"]]
    return entries
