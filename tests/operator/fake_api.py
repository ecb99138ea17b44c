"""An in-memory stand-in for the API server, for driving the operator's reconciler without one.

It answers exactly the requests the reconciler makes (create/get/put/delete, merge patches of node
metadata and pool status, the JSON patch that removes a scheduling gate) and echoes every write into
the :class:`~gpupool_operator.adapters.store.Store` the way the watches would. :meth:`bind_all`
plays kube-scheduler and kubelet (created pods land on their annotated node, Running and Ready),
:meth:`mig_manager` plays NVIDIA's MIG manager. Used by fast tests of the placement loop and by
``benchmarks/operator/offline_cycle.py``; the real control plane stays the proof (tests marked
``cluster``).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from gpupool_operator.adapters import miglayout, names
from gpupool_operator.adapters.kube import Kube, KubeError
from gpupool_operator.adapters.store import Kind, Store

Obj = dict[str, Any]


class FakeKube(Kube):
    """Answers the reconciler's requests from memory; every write is echoed to the store the way
    the watches would echo it. Created pods are bound to their annotated node and made Ready
    when :meth:`bind_all` runs (kube-scheduler and kubelet)."""

    def __init__(self, store: Store) -> None:
        super().__init__(api_client=None, workers=1)
        self.store = store
        self.rv = itertools.count(1000)
        self.objects: dict[str, Obj] = {}
        self.unbound: list[str] = []
        self.deleting: list[str] = []

    async def run(self, func: Any, *args: Any) -> Any:  # no thread hop: measure CPU, not scheduling
        return func(*args)

    def _stamp(self, obj: Obj) -> Obj:
        obj["metadata"]["resourceVersion"] = str(next(self.rv))
        return obj

    def request(self, method: str, path: str, body: Any = None, query: Any = None,
                content_type: str = "application/json") -> Obj:
        with self._lock:
            self.requests[method] += 1
        parts = path.strip("/").split("/")
        if method == "POST":
            obj = copy.deepcopy(body)
            meta = obj.setdefault("metadata", {})
            key = f"{path}/{meta['name']}"
            if key in self.objects:
                raise KubeError(409, "exists")
            meta.setdefault("uid", f"uid-{next(self.rv)}")
            meta.setdefault("generation", 1)
            self.objects[key] = self._stamp(obj)
            if parts[-1] == "pods":
                self.unbound.append(key)
            return copy.deepcopy(obj)
        if method == "DELETE":
            if parts[-2] == "pods":
                self.deleting.append(f"{parts[-3]}/{parts[-1]}")
            return {}
        if method == "GET":
            obj = self.objects.get(path)
            if obj is None:
                raise KubeError(404, "not found")
            return copy.deepcopy(obj)
        if method == "PUT":
            obj = self._stamp(copy.deepcopy(body))
            self.objects[path] = obj
            return copy.deepcopy(obj)
        if method == "PATCH":
            if parts[-1] == "status" and "inferencepools" in parts:
                current = self.store.get(Kind.POOL, f"{parts[-4]}/{parts[-2]}")
                if current is None:
                    raise KubeError(404, "gone")
                obj = copy.deepcopy(current)
                obj["status"] = body["status"]
                return self._stamp(obj)
            if "nodes" in parts:
                current = copy.deepcopy(self.store.get(Kind.NODE, parts[-1]) or {})
                for section in ("labels", "annotations"):
                    for k, v in (body.get("metadata", {}).get(section) or {}).items():
                        target = current["metadata"].setdefault(section, {})
                        if v is None:
                            target.pop(k, None)
                        else:
                            target[k] = v
                return self._stamp(current)
            if "pods" in parts:
                current = copy.deepcopy(self.store.get(Kind.POD, f"{parts[-3]}/{parts[-1]}") or {})
                current["spec"]["schedulingGates"] = []
                return self._stamp(current)
        return {}

    def mig_manager(self) -> int:
        """NVIDIA's MIG manager: a node asked for a layout gets it (allocatable and state)."""
        n = 0
        for node in self.store.all(Kind.NODE):
            labels = node["metadata"].get("labels", {}) or {}
            if labels.get(names.LABEL_MIG_CONFIG_STATE) != "pending":
                continue
            _, target = miglayout.node_layouts(node)
            if target is None:
                continue
            node = copy.deepcopy(node)  # noqa: PLW2901
            alloc = {k: v for k, v in node["status"]["allocatable"].items() if not k.startswith("nvidia.com/mig-")}
            alloc["nvidia.com/gpu"] = str(sum(1 for x in target if not x))
            for counts in target:
                for profile, count in counts.items():
                    res = "nvidia.com/mig-" + profile.replace("+", ".")
                    alloc[res] = str(int(alloc.get(res, "0")) + count)
            node["status"]["allocatable"] = alloc
            node["metadata"]["labels"][names.LABEL_MIG_CONFIG_STATE] = "success"
            self.store.apply_event(Kind.NODE, "MODIFIED", self._stamp(node))
            n += 1
        return n

    def finish_deletions(self) -> int:
        """kubelet: pods being deleted are gone (the watch's DELETED event)."""
        n = 0
        for key in self.deleting:
            obj = self.store.get(Kind.POD, key)
            if obj is not None:
                self.store.apply_event(Kind.POD, "DELETED", self._stamp(copy.deepcopy(obj)))
                n += 1
        self.deleting = []
        return n

    def bind_all(self) -> int:
        """kube-scheduler + kubelet: pods being deleted go; every created pod lands on its node
        and turns Ready."""
        self.finish_deletions()
        n = 0
        waiting, self.unbound = self.unbound, []
        for key in waiting:
            obj = self.objects.pop(key)
            live = self.store.get(Kind.POD, f"{obj['metadata']['namespace']}/{obj['metadata']['name']}")
            if live is None or live["metadata"].get("deletionTimestamp"):
                continue
            if live["spec"].get("schedulingGates"):
                self.unbound.append(key)
                self.objects[key] = obj
                continue
            pod = copy.deepcopy(live)
            pod["spec"]["nodeName"] = pod["metadata"]["annotations"][names.ANN_NODE]
            pod["status"] = {"phase": "Running", "conditions": [
                {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]}
            self.store.apply_event(Kind.POD, "MODIFIED", self._stamp(pod))
            n += 1
        return n
