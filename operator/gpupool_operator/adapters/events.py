"""Kubernetes Events: what the operator decided and why, where ``kubectl describe`` shows it.

Events are queued during a cycle (stages call :meth:`EventRecorder.record`, on the event loop's
thread only) and posted by the report stage, grouped: one Event per object, type and reason per
cycle, so 200 replicas placed make one Event on their pool, not 200 writes. A replica's events go
to its InferencePool; MIG steps to the Node; a pod that copies the operator's labels gets its own
Warning. Posting is best effort: a refused Event never fails a cycle.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gpupool_operator.adapters.kube import Kube, KubeError, path_for
from gpupool_operator.api import API_VERSION

__all__ = ["EventRecorder", "involved_node", "involved_pool"]

log = logging.getLogger("gpupool.events")
Obj = dict[str, Any]
Event = tuple[Obj, str, str, str]  # (involvedObject, type, reason, message)


def involved_pool(namespace: str, name: str, uid: str) -> Obj:
    return {"apiVersion": API_VERSION, "kind": "InferencePool", "name": name, "uid": uid, "namespace": namespace}


def involved_node(node: Mapping[str, Any]) -> Obj:
    meta = node.get("metadata", {})
    return {"apiVersion": "v1", "kind": "Node", "name": meta.get("name"), "uid": meta.get("uid")}


def involved_pod(pod: Mapping[str, Any]) -> Obj:
    meta = pod.get("metadata", {})
    return {"apiVersion": "v1", "kind": "Pod", "name": meta.get("name"), "uid": meta.get("uid"),
            "namespace": meta.get("namespace")}


class EventRecorder:
    """Queues Events during a cycle and posts them grouped (see the module doc)."""

    def __init__(self, kube: Kube, instance: str = "gpupool-operator") -> None:
        self.kube = kube
        self.instance = instance
        self.pending: list[Event] = []

    def record(self, involved: Obj, warning: bool, reason: str, message: str) -> None:
        self.pending.append((involved, "Warning" if warning else "Normal", reason, message))

    def take(self) -> list[Event]:
        """This cycle's Events, grouped, and the queue emptied."""
        groups: dict[tuple[str, str, str], tuple[Obj, list[str]]] = {}
        for involved, type_, reason, message in self.pending:
            key = (str(involved.get("uid") or involved.get("name")), type_, reason)
            groups.setdefault(key, (involved, []))[1].append(message)
        self.pending = []
        out: list[Event] = []
        for (_, type_, reason), (involved, messages) in groups.items():
            text = messages[0] if len(messages) == 1 else f"{len(messages)} x: " + "; ".join(messages)
            out.append((involved, type_, reason, text if len(text) <= 1024 else text[:1020] + " ..."))
        return out

    def post(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        """Create one Event (blocking; errors are logged, never raised)."""
        namespace = involved.get("namespace") or "default"
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{involved.get('name', 'gpupool')}.{uuid.uuid4().hex[:12]}", "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "gpupool-operator"},
            "reportingComponent": "gpupool.io/operator",
            "reportingInstance": self.instance,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        try:
            self.kube.create(path_for("v1", "events", namespace=namespace), body)
        except KubeError as err:  # events are best effort
            log.debug("event not recorded: %s", err)
