"""API objects -> the decide stage's facts (:mod:`gpupool_operator.core.observed`).

The only place that reads the operator's pod annotations, NVIDIA's MIG labels and the operator's
MIG annotations on nodes for deciding (the snapshot reads the same for placing). Pure functions;
the observe stage memoises them per object version.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gpupool_operator.adapters import names
from gpupool_operator.adapters.inventory import MIG_PREFIX, pod_requests
from gpupool_operator.adapters.inventory import quantity as _count
from gpupool_operator.adapters.workloads import pod_is_ready
from gpupool_operator.core.mig import placement_counts
from gpupool_operator.core.observed import ForeignPod, MigNode, MigRequest, PerGpu, Replica, per_gpu

__all__ = ["foreign_pod", "mig_node", "node_layouts", "parse_time", "replica", "request_time", "wants_gpu"]

Obj = Mapping[str, Any]


def parse_time(raw: str | None) -> float | None:
    """An RFC 3339 timestamp (as the API server writes them) in unix seconds, or ``None``."""
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _limits(pod: Obj) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        out.update({**(res.get("limits") or {}), **(res.get("requests") or {})})
    return out


def wants_gpu(pod: Obj) -> bool:
    return any(k.startswith("nvidia.com/") for k in _limits(pod))


def _pod_gpus(meta: Obj) -> frozenset[int]:
    ann = meta.get("annotations") or {}
    out = {int(x) for x in str(ann.get(names.ANN_GPUS, "")).split(",") if x.strip().isdigit()}
    inst = ann.get(names.ANN_MIG_INSTANCE)
    if inst and str(inst).split(":", 1)[0].isdigit():
        out.add(int(str(inst).split(":", 1)[0]))
    return frozenset(out)


def replica(pod: Obj, pool: str) -> Replica:
    """One of the operator's replica pods (ownership already proven: ``pool`` owns it)."""
    meta = pod.get("metadata", {})
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    labels = meta.get("labels") or {}
    ann = meta.get("annotations") or {}
    gates = [g.get("name") for g in spec.get("schedulingGates") or []]
    index: int | None = None
    with contextlib.suppress(ValueError, TypeError):
        index = int(str(labels.get(names.LABEL_REPLICA)))
    bound = spec.get("nodeName") or None
    refused = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"
                    and c.get("status") == "False" and c.get("reason") == "Unschedulable"), None)
    return Replica(
        key=f"{meta.get('namespace')}/{meta.get('name')}",
        uid=str(meta.get("uid") or ""),
        pool=pool,
        demand=str(ann.get(names.ANN_DEMAND, "")),
        index=index,
        node=bound or ann.get(names.ANN_NODE),
        bound=bool(bound),
        deleting=bool(meta.get("deletionTimestamp")),
        finished=status.get("phase") in ("Succeeded", "Failed"),
        phase=str(status.get("phase") or ""),
        mig_gated=names.MIG_GATE in gates,
        gated=bool(gates),
        ready=pod_is_ready(pod),
        gpus=_pod_gpus(meta),
        holds_gpu=wants_gpu(pod),
        refused_since=None if refused is None else (parse_time(refused.get("lastTransitionTime")) or 0.0),
        refused_message=str((refused or {}).get("message") or ""),
        ip=status.get("podIP") or None,
    )


def foreign_pod(pod: Obj) -> ForeignPod | None:
    """A live, bound pod that is not ours and holds GPUs (what may block a MIG re-layout)."""
    spec = pod.get("spec") or {}
    if not spec.get("nodeName") or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return None
    req = pod_requests(pod)
    whole = int(req.get("nvidia.com/gpu", "0") or 0)
    profiles = tuple(sorted(k[len(MIG_PREFIX):] for k, v in req.items() if k.startswith(MIG_PREFIX) and v != "0"))
    if not whole and not profiles:
        return None
    meta = pod.get("metadata", {})
    return ForeignPod(key=f"{meta.get('namespace')}/{meta.get('name')}", node=str(spec["nodeName"]),
                      whole_gpus=whole, mig_profiles=profiles)


def _layouts(raw: str | None) -> PerGpu | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
        return per_gpu([{str(k): int(v) for k, v in (x or {}).items()} for x in value])
    except (ValueError, TypeError, AttributeError):
        return None


def node_layouts(node: Obj) -> tuple[PerGpu | None, PerGpu | None]:
    """(committed, target) per-GPU layouts from the node's annotations."""
    ann = node.get("metadata", {}).get("annotations") or {}
    return _layouts(ann.get(names.ANN_MIG_LAYOUT)), _layouts(ann.get(names.ANN_MIG_LAYOUT_TARGET))


def _request(raw: str | None) -> MigRequest | None:
    if not raw:
        return None
    try:
        doc = json.loads(raw)
        return MigRequest(str(doc["config"]), float(doc["at"]), str(doc.get("stateThen") or ""),
                          bool(doc.get("seen")))
    except (ValueError, TypeError, KeyError):
        return None


def request_time(raw: str | None) -> float | None:
    """When the operator set the label its ``gpupool.io/mig-request`` annotation records."""
    request = _request(raw)
    return None if request is None else request.at


def mig_node(node: Obj, parsed_layouts: tuple[Any, ...] | None, seen: bool) -> MigNode:
    """A node's MIG facts. ``parsed_layouts`` are the snapshot's per-GPU placements (the layout
    in force when no ``gpupool.io/mig-layout`` says it); ``seen``: the observe stage watched the
    MIG manager report pending/rebooting for the requested config since the request."""
    meta = node.get("metadata", {})
    labels = meta.get("labels") or {}
    ann = meta.get("annotations") or {}
    alloc = (node.get("status") or {}).get("allocatable") or {}
    current, target = node_layouts(node)
    if current is None and target is None and parsed_layouts is not None:
        current = tuple(() if p is None else placement_counts(p) for p in parsed_layouts)
    request = _request(ann.get(names.ANN_MIG_REQUEST))
    if request is not None and seen and not request.seen:
        request = MigRequest(request.config, request.at, request.state_then, True)
    failed = str(ann.get(names.ANN_MIG_FAILED, "")).split(" ", 1)[0]
    since = ann.get(names.ANN_MIG_LAYOUT_SINCE)
    return MigNode(
        name=str(meta.get("name")),
        gpu_count=_count(labels.get("nvidia.com/gpu.count")) or (len(parsed_layouts) if parsed_layouts else 0),
        config=labels.get(names.LABEL_MIG_CONFIG),
        state=labels.get(names.LABEL_MIG_CONFIG_STATE),
        current=current,
        target=target,
        since=float(since) if since and str(since).replace(".", "", 1).isdigit() else (
            request.at if request is not None else None),
        previous=ann.get(names.ANN_MIG_CONFIG_PREVIOUS) or None,
        request=request,
        failed_at=float(failed) if failed.replace(".", "", 1).isdigit() else None,
        mig_allocatable=tuple(sorted((k[len(MIG_PREFIX):], _count(v)) for k, v in alloc.items()
                                     if k.startswith(MIG_PREFIX) and _count(v) > 0)),
        whole_allocatable=_count(alloc.get("nvidia.com/gpu")),
    )
