"""An in-memory stand-in for the API server, for driving the operator's reconciler without one.

It answers exactly the requests the reconciler makes (create/get/put/delete, merge patches of node
metadata and pool status, the JSON patch that removes a scheduling gate) and echoes every write into
the :class:`~gpupool_operator.adapters.store.Store` the way the watches would. :meth:`bind_all`
plays kube-scheduler and kubelet (created pods land on their annotated node, Running and Ready),
:meth:`mig_manager` plays NVIDIA's MIG manager. Used by fast tests of the placement loop and by
``benchmarks/operator/offline_cycle.py``; ``test_fake_api_contract.py`` runs every kind of
request it answers against the real API server too, with the same answers asserted, and the real
control plane stays the proof (tests marked ``cluster``).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from gpupool_operator.adapters import facts, names
from gpupool_operator.adapters.kube import Kube, KubeError
from gpupool_operator.adapters.store import Kind, Store
from gpupool_operator.core.observed import as_dicts

Obj = dict[str, Any]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies ``application/merge-patch+json``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _precondition(current: Obj, expected: str | None, field: str) -> None:
    """The API server's 409 when a write names a uid or resourceVersion that is no longer the object's."""
    if expected is not None and expected != current["metadata"].get(field):
        raise KubeError(409, f"the object has been modified: precondition {field} {expected} does not match",
                        "Conflict")


def _patched(current: Obj, body: Obj) -> Obj:
    _precondition(current, (body.get("metadata") or {}).get("resourceVersion"), "resourceVersion")
    return dict(merge_patch(current, body))


class FakeKube(Kube):
    """Answers the reconciler's requests from memory; every write is echoed to the store the way
    the watches would echo it. Created pods are bound to their annotated node and made Ready
    when :meth:`bind_all` runs (kube-scheduler and kubelet)."""

    def __init__(self, store: Store, feed: Any = None) -> None:
        super().__init__(api_client=None, workers=1)
        self.store = store
        self.feed = feed or store.apply_event  # the watch: the observe stage's feed when given
        self.rv = itertools.count(1000)
        self.objects: dict[str, Obj] = {}
        self.unbound: list[str] = []
        self.deleting: list[str] = []
        self.applied: dict[str, str] = {}  # node -> the mig.config the MIG manager last applied

    async def run(self, func: Any, *args: Any) -> Any:  # no thread hop: measure CPU, not scheduling
        return func(*args)

    def _stamp(self, obj: Obj) -> Obj:
        obj["metadata"]["resourceVersion"] = str(next(self.rv))
        return obj

    def send(self, method: str, path: str, body: Any, query: Any, content_type: str) -> Obj:
        parts = path.strip("/").split("/")
        if method == "POST":
            obj = copy.deepcopy(body)
            meta = obj.setdefault("metadata", {})
            key = f"{path}/{meta['name']}"
            if key in self.objects:
                raise KubeError(409, "exists")
            if "namespaces" in parts:
                meta.setdefault("namespace", parts[parts.index("namespaces") + 1])
            meta.setdefault("uid", f"uid-{next(self.rv)}")
            meta.setdefault("generation", 1)
            self.objects[key] = self._stamp(obj)
            if parts[-1] == "pods":
                self.unbound.append(key)
            return copy.deepcopy(obj)
        if method == "DELETE":
            if parts[-2] == "pods":
                key = f"{parts[-3]}/{parts[-1]}"
                current = self.store.get(Kind.POD, key)
                if current is None:
                    raise KubeError(404, f"pods {parts[-1]!r} not found", "NotFound")
                _precondition(current, (body or {}).get("preconditions", {}).get("uid"), "uid")
                self.deleting.append(key)
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
            if parts[-1] == "status" and ("inferencepools" in parts or "gpupoolconfigs" in parts):
                pool = "inferencepools" in parts
                current = self.store.get(Kind.POOL, f"{parts[-4]}/{parts[-2]}") if pool else \
                    self.store.get(Kind.CONFIG, parts[-2])
                if current is None:
                    raise KubeError(404, "gone", "NotFound")
                obj = copy.deepcopy(current)
                obj["status"] = merge_patch(obj.get("status"), body["status"])
                return self._stamp(obj)
            if "nodes" in parts or "services" in parts:
                kind = Kind.NODE if "nodes" in parts else Kind.SERVICE
                key = parts[-1] if kind is Kind.NODE else f"{parts[-3]}/{parts[-1]}"
                current = self.store.get(kind, key)
                if current is None:
                    raise KubeError(404, f"{parts[-2]} {parts[-1]!r} not found", "NotFound")
                return self._stamp(_patched(current, body))
            if "configmaps" in parts:
                if path not in self.objects:
                    raise KubeError(404, f"configmaps {parts[-1]!r} not found", "NotFound")
                self.objects[path] = self._stamp(_patched(self.objects[path], body))
                return copy.deepcopy(self.objects[path])
            if "pods" in parts:
                current = copy.deepcopy(self.store.get(Kind.POD, f"{parts[-3]}/{parts[-1]}") or {})
                if not current:
                    raise KubeError(404, f"pods {parts[-1]!r} not found", "NotFound")
                for op in body:  # the JSON patch the act stage sends: test the uid, replace the gates
                    uid = current["metadata"]["uid"]
                    if op["op"] == "test" and op["path"] == "/metadata/uid" and op["value"] != uid:
                        raise KubeError(422, "the server rejected our request due to an error in our request",
                                        "Invalid")
                    if op["op"] == "replace" and op["path"] == "/spec/schedulingGates":
                        current["spec"]["schedulingGates"] = copy.deepcopy(op["value"])
                return self._stamp(current)
        return {}

    def mig_manager(self) -> int:
        """NVIDIA's MIG manager: a node whose ``nvidia.com/mig.config`` changed goes pending, then
        gets the layout (allocatable and state success). Only it writes the state label."""
        n = 0
        for node in self.store.all(Kind.NODE):
            name = node["metadata"]["name"]
            labels = node["metadata"].get("labels", {}) or {}
            wanted = labels.get(names.LABEL_MIG_CONFIG)
            asked = names.ANN_MIG_REQUEST in (node["metadata"].get("annotations") or {})
            self.applied.setdefault(name, "" if asked else wanted or "")  # first sight: what it came up with
            if not wanted or self.applied[name] == wanted:
                continue
            self.applied[name] = wanted
            _, target = facts.node_layouts(node)
            if target is None:
                continue
            pending = copy.deepcopy(node)
            pending["metadata"]["labels"][names.LABEL_MIG_CONFIG_STATE] = "pending"
            self.feed(Kind.NODE, "MODIFIED", self._stamp(pending))
            node = copy.deepcopy(pending)  # noqa: PLW2901
            alloc = {k: v for k, v in node["status"]["allocatable"].items() if not k.startswith("nvidia.com/mig-")}
            alloc["nvidia.com/gpu"] = str(sum(1 for x in target if not x))
            for counts in as_dicts(target):
                for profile, count in counts.items():
                    res = "nvidia.com/mig-" + profile.replace("+", ".")
                    alloc[res] = str(int(alloc.get(res, "0")) + count)
            node["status"]["allocatable"] = alloc
            node["metadata"]["labels"][names.LABEL_MIG_CONFIG_STATE] = "success"
            self.feed(Kind.NODE, "MODIFIED", self._stamp(node))
            n += 1
        return n

    def finish_deletions(self) -> int:
        """kubelet: pods being deleted are gone (the watch's DELETED event)."""
        n = 0
        for key in self.deleting:
            obj = self.store.get(Kind.POD, key)
            if obj is not None:
                self.feed(Kind.POD, "DELETED", self._stamp(copy.deepcopy(obj)))
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
            self.feed(Kind.POD, "MODIFIED", self._stamp(pod))
            n += 1
        return n


class FakeLeases(Kube):
    """Just enough of the API server for Leases: create, get, and PUT guarded by resourceVersion
    (``tests/operator/test_operator_leader.py`` runs the same scenarios against the real server)."""

    def __init__(self) -> None:
        super().__init__(api_client=None, workers=1)
        self.leases: dict[str, Obj] = {}
        self.version = 0
        self.fail_puts = False  # the API server unreachable for updates

    def send(self, method: str, path: str, body: Any, query: Any, content_type: str) -> Obj:
        if method == "GET":
            if path not in self.leases:
                raise KubeError(404, "not found", "NotFound")
            return copy.deepcopy(self.leases[path])
        if method == "POST":
            path = f"{path}/{body['metadata']['name']}"
            if path in self.leases:
                raise KubeError(409, "already exists", "AlreadyExists")
        elif method == "PUT":
            if self.fail_puts:
                raise KubeError(0, "connection refused", "Unreachable")
            current = self.leases.get(path)
            if current is None or body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                raise KubeError(409, "the object has been modified", "Conflict")
        self.version += 1
        lease = copy.deepcopy(body)
        lease["metadata"]["resourceVersion"] = str(self.version)
        self.leases[path] = lease
        return copy.deepcopy(lease)
