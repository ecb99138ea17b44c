"""Capacity kube-scheduler refused, kept out of plans for a while.

When kube-scheduler refuses a replica for longer than the grace period, the plan and the node
disagree (capacity held by something the operator cannot see, a device plugin that does not
advertise what the labels promise). The replica is stopped, and what it asked for is treated as
taken on that node for ``cooldown_s`` (stand-in pods the snapshot counts as another party's), so
the next plan puts it elsewhere or reports it unplaced instead of retrying the same node forever.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gpupool_operator.adapters import names
from gpupool_operator.adapters.facts import wants_gpu
from gpupool_operator.adapters.inventory import MIG_PREFIX

__all__ = ["RefusedCapacity", "phantoms"]

Obj = dict[str, Any]


def phantoms(pod: Mapping[str, Any], node: Mapping[str, Any] | None) -> list[Obj]:
    """Stand-in pods that occupy, on ``node``, every unit of what ``pod`` asked for there."""
    if node is None:
        return []
    name = node["metadata"]["name"]
    limits = dict(pod["spec"]["containers"][0].get("resources", {}).get("limits", {}) or {})
    gpus = int((node["metadata"].get("labels", {}) or {}).get("nvidia.com/gpu.count", "0") or 0)
    alloc = node.get("status", {}).get("allocatable", {}) or {}
    if any(k.startswith(MIG_PREFIX) for k in limits):
        copies, wanted = max(gpus, 1) * 7, {k: "1" for k in limits if k.startswith("nvidia.com/")}
    elif wants_gpu(pod):
        copies, wanted = 1, {"nvidia.com/gpu": str(gpus)}
    else:
        copies, wanted = 1, {"cpu": str(alloc.get("cpu", "0")), "memory": str(alloc.get("memory", "0"))}
    return [{
        "metadata": {"name": f"refused-{name}-{i}", "namespace": "gpupool-refused"},
        "spec": {"nodeName": name, "containers": [{"resources": {"limits": wanted, "requests": wanted}}]},
        "status": {"phase": "Running"},
    } for i in range(copies)]


class RefusedCapacity:
    """The stand-ins for refused capacity, each until its cool-down ends."""

    def __init__(self, cooldown_s: float) -> None:
        self.cooldown_s = cooldown_s
        self._held: list[tuple[float, Obj]] = []

    def add(self, seen: Any, pods: Iterable[str], now: float) -> None:
        """Hold what the replicas ``pods`` (namespace/name) asked for on their pinned nodes."""
        by_key = {f"{p['metadata'].get('namespace')}/{p['metadata']['name']}": p for p in seen.pods} if pods else {}
        for key in pods:
            pod = by_key.get(key)
            if pod is None:
                continue
            node = seen.nodes.get((pod["metadata"].get("annotations") or {}).get(names.ANN_NODE, ""))
            self._held += [(now + self.cooldown_s, p) for p in phantoms(pod, node)]

    def phantoms(self, now: float) -> list[Obj]:
        """The stand-ins still in force (the same objects while nothing expires: the plan's key)."""
        if any(until <= now for until, _ in self._held):
            self._held = [(until, p) for until, p in self._held if until > now]
        return [p for _, p in self._held]
