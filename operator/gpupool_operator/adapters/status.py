"""An InferencePool's status from the plan and the pods that exist: placements, readiness, cost, conditions.

Written through the API models (:class:`~gpupool_operator.api.InferencePoolStatus`), so what the
operator writes is exactly what the CRD schema accepts. Conditions keep their transition time while
their status holds (``set_condition``); the clock is passed in.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from gpupool_operator.adapters import names
from gpupool_operator.adapters.modelload import LoadFailure, load_condition
from gpupool_operator.adapters.workloads import pod_is_ready
from gpupool_operator.api import (
    Condition,
    ConditionReason,
    ConditionStatus,
    ConditionType,
    InferencePool,
    InferencePoolStatus,
    ModelStatus,
    ReplicaPlacement,
    mig_resource_name,
    set_condition,
)
from gpupool_operator.core.backoff import Refusal
from gpupool_operator.core.demand import ShapeKind
from gpupool_operator.core.plan import Assignment, Plan, Unplaced
from gpupool_operator.core.reasons import UnplacedCode

__all__ = ["fake_nodes", "is_fake_node", "pool_status", "status_differs", "unplaced_reason"]

Obj = Mapping[str, Any]


#: what KWOK (sigs.k8s.io/kwok) fake nodes carry: ``gpupool local`` sets both (local/nodes.py)
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
KWOK_NODE_LABEL = ("type", "kwok")


def is_fake_node(node: Obj) -> bool:
    """Whether ``node`` is a KWOK fake: its pods look Running and Ready, but nothing runs to serve."""
    meta = node.get("metadata") or {}
    ann, labels = meta.get("annotations") or {}, meta.get("labels") or {}
    return bool(ann.get(KWOK_NODE_ANNOTATION[0]) == KWOK_NODE_ANNOTATION[1]
                or labels.get(KWOK_NODE_LABEL[0]) == KWOK_NODE_LABEL[1])


def fake_nodes(nodes: Mapping[str, Obj]) -> frozenset[str]:
    """The names of the KWOK fake nodes among ``nodes`` (by name)."""
    return frozenset(name for name, obj in nodes.items() if is_fake_node(obj))


def _money(value: float) -> Decimal:
    return Decimal(f"{value:.4f}")


def unplaced_reason(u: Unplaced) -> ConditionReason:
    """The condition reason for unplaced replicas: the solver's ``Unplaced.code``
    (:class:`~gpupool_operator.core.reasons.UnplacedCode`), never read from the message text.
    No hardware in the cluster meeting the model's needs, or no code at all, reads Unplaceable."""
    return _BY_CODE.get(u.code, ConditionReason.UNPLACEABLE)


_BY_CODE: Mapping[str, ConditionReason] = {
    UnplacedCode.NO_NODES: ConditionReason.NO_NODES,
    UnplacedCode.NO_ACCEPTED_SHAPE: ConditionReason.UNPLACEABLE,
    UnplacedCode.INSUFFICIENT_CAPACITY: ConditionReason.INSUFFICIENT_CAPACITY,
    UnplacedCode.TAINTED: ConditionReason.NODES_TAINTED,
    UnplacedCode.SPOT_ONLY: ConditionReason.SPOT_ONLY_CAPACITY,
    UnplacedCode.BUDGET_EXCEEDED: ConditionReason.BUDGET_EXCEEDED,
    UnplacedCode.MIG_RELAYOUT_FORBIDDEN: ConditionReason.MIG_RELAYOUT_FORBIDDEN,
}


def _resource(a: Assignment) -> tuple[str, int]:
    if a.shape.kind is ShapeKind.MIG:
        return mig_resource_name(a.shape.profile), 1
    if a.shape.kind is ShapeKind.GPU:
        return "nvidia.com/gpu", max(a.shape.gpus, 1)
    return "cpu", max(1, a.shape.cpu_millis // 1000)


def pool_status(
    pool: InferencePool,
    plan: Plan,
    pods_by_demand: Mapping[str, Sequence[Obj]],
    pod_for_assignment: Mapping[tuple[str, int], str],
    desired: Mapping[str, int],
    previous: InferencePoolStatus | None,
    now: datetime,
    extra_messages: Sequence[str] = (),
    index: Mapping[str, Sequence[Assignment]] | None = None,
    refused: Refusal | None = None,
    loads: Mapping[str, Any] | None = None,
    load_failures: Sequence[LoadFailure] | None = None,
    fake: Collection[str] = frozenset(),
) -> InferencePoolStatus:
    """The status this pool should have after a cycle that produced ``plan``.

    ``index`` (assignments by demand) saves a scan of the whole plan per model on big clusters;
    ``refused``: the API server refused a write for the pool (Degraded with its reason, whatever
    else holds); ``loads``: per demand, what its Ready replicas' workers served
    (:class:`~gpupool_operator.adapters.workerstats.ModelLoad`): the only source of $/1M, with idle time
    charged (replica-seconds x price / inferences), not busy time only; ``fake``: the names of KWOK
    fake nodes (:func:`fake_nodes`): replicas Ready there count as ready, never as serving.
    """
    namespace, name = pool.metadata.namespace or "default", pool.metadata.name or ""
    models: list[ModelStatus] = []
    unplaced_all: list[Unplaced] = []
    total_cost = 0.0
    ready_models = ready_total = desired_total = serving_total = 0
    gated = False
    scaling_down = False
    served_cost = served_rate = 0.0
    for model in pool.spec.models:
        key = names.demand_key(namespace, name, model.name)
        pods = {p["metadata"]["name"]: p for p in pods_by_demand.get(key, [])}
        replicas: list[ReplicaPlacement] = []
        cost = 0.0
        for a in (index.get(key, ()) if index is not None else plan.for_demand(key)):
            pod_name = pod_for_assignment.get((key, a.replica))
            pod = pods.get(pod_name or "")
            resource, count = _resource(a)
            ready = pod is not None and pod_is_ready(pod)
            if pod is not None and pod.get("spec", {}).get("schedulingGates"):
                gated = True
            node = (pod or {}).get("spec", {}).get("nodeName") or a.node
            replicas.append(
                ReplicaPlacement(
                    pod=pod_name,
                    node=node,
                    resource=resource,
                    count=count,
                    gpu_product=a.shape.product or None if a.shape.kind is not ShapeKind.CPU else None,
                    ready=ready,
                    usd_per_hour=_money(a.cost),
                )
            )
            cost += a.cost
        unplaced = [u for u in plan.unplaced if u.demand == key]
        unplaced_all += unplaced
        ready_n = sum(1 for r in replicas if r.ready)
        serving_n = sum(1 for r in replicas if r.ready and r.node not in fake)
        want = desired.get(key, model.min_replicas)
        if len(pods) > len(replicas):
            scaling_down = True
        message = "; ".join(f"{u.count} replica(s) unplaced: {u.reason}" for u in unplaced) or None
        load = (loads or {}).get(key)
        per_million = load.usd_per_million_inferences if load is not None else None
        models.append(
            ModelStatus(
                name=model.name,
                desired_replicas=want,
                ready_replicas=ready_n,
                serving_replicas=serving_n,
                replicas=sorted(replicas, key=lambda r: r.pod or ""),
                usd_per_hour=_money(cost),
                queue_depth=round(load.queue_depth) if load is not None else None,
                inferences_per_second=_money(load.inferences_per_second) if load is not None else None,
                usd_per_million_inferences=_money(per_million) if per_million is not None else None,
                message=message[:1024] if message else None,
            )
        )
        if load is not None and per_million is not None:
            served_cost += per_million * load.inferences_per_second
            served_rate += load.inferences_per_second
        total_cost += cost
        ready_total += ready_n
        serving_total += serving_n
        desired_total += want
        if ready_n >= want:
            ready_models += 1
    conditions = list(previous.conditions) if previous is not None else []
    gen = pool.metadata.generation

    def cond(type_: ConditionType, ok: bool, reason: ConditionReason, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(
            conditions,
            Condition(
                type=type_.value,
                status=ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
                observed_generation=gen,
                last_transition_time=now,
                reason=reason.value,
                message=message[:32768],
            ),
        )

    placed_count = sum(len(m.replicas) for m in models)
    if unplaced_all:
        reasons = [unplaced_reason(u) for u in unplaced_all]
        reason = ConditionReason.BUDGET_EXCEEDED if ConditionReason.BUDGET_EXCEEDED in reasons else reasons[0]
        text = "; ".join(f"{u.demand.rsplit('/', 1)[-1]}: {u.count} replica(s) unplaced: {u.reason}"
                         for u in unplaced_all)
        cond(ConditionType.PLACED, False, reason, text)
        cond(ConditionType.DEGRADED, True, reason, text)
    else:
        cond(ConditionType.PLACED, True, ConditionReason.PLACED, f"{placed_count} replica(s) placed")
        extra = "; ".join(extra_messages)
        cond(ConditionType.DEGRADED, bool(extra), ConditionReason.AS_EXPECTED if not extra
             else ConditionReason.REPLICAS_NOT_READY, extra or "serving as specified")
    if refused is not None:
        conditions = set_condition(conditions, Condition(
            type=ConditionType.DEGRADED.value, status=ConditionStatus.TRUE, observed_generation=gen,
            last_transition_time=now, reason=refused.reason, message=refused.message[:32768]))
    if ready_models == len(models):
        cond(ConditionType.READY, True, ConditionReason.ALL_REPLICAS_READY,
             f"{ready_total} of {desired_total} replica(s) ready")
    else:
        cond(ConditionType.READY, False, ConditionReason.REPLICAS_NOT_READY,
             f"{ready_total} of {desired_total} replica(s) ready")
    # the live scaling loop's last decisions (status.scaling, adapters/autoscale.py) say why
    decided = "".join(f"; {m.name}: {m.last_decision}" for m in (previous.scaling.models if previous is not None
                      and previous.scaling is not None else ()) if m.last_decision)[:4096]
    if gated:
        cond(ConditionType.SCALING, True, ConditionReason.MIG_RECONFIGURING,
             "waiting for NVIDIA's MIG manager to apply a new layout" + decided)
    elif scaling_down:
        cond(ConditionType.SCALING, True, ConditionReason.SCALING_DOWN,
             "stopping replicas the plan no longer needs" + decided)
    elif ready_total < placed_count:
        cond(ConditionType.SCALING, True, ConditionReason.SCALING_UP, "replicas starting" + decided)
    else:
        cond(ConditionType.SCALING, False, ConditionReason.STABLE, "replica counts match the plan" + decided)
    if load_failures is not None:  # what the replicas report (adapters.modelload); None: not read this cycle
        conditions = set_condition(conditions, load_condition(load_failures, gen, now))
    return InferencePoolStatus(
        observed_generation=gen,
        conditions=conditions,
        models=models,
        model_count=len(models),
        ready_models=ready_models,
        desired_replicas=desired_total,
        ready_replicas=ready_total,
        serving_replicas=serving_total,
        usd_per_hour=_money(total_cost),
        usd_per_million_inferences=_money(served_cost / served_rate) if served_rate > 0 else None,
    )


def _comparable(status: Mapping[str, Any] | None) -> Any:
    if not status:
        return None
    out = dict(status)
    out.pop("scaling", None)  # the scaling loop's (adapters/autoscale.py); the report stage never writes it
    out["conditions"] = sorted(
        ({k: v for k, v in c.items() if k != "lastTransitionTime"} for c in out.get("conditions", [])),
        key=lambda c: str(c.get("type")),
    )
    return out


def status_differs(stored: Mapping[str, Any] | None, new: InferencePoolStatus) -> bool:
    """Whether writing ``new`` would change what the API server holds (transition times aside)."""
    return bool(_comparable(stored) != _comparable(new.to_wire()))
