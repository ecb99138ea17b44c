"""The operator's in-memory view of the cluster, fed by kopf's watches (an informer cache).

Why a cache: the placement loop is global and runs after every relevant change; listing 1,000
nodes and every pod per cycle would cost seconds and megabytes per change. kopf's watch events keep
this store current at no extra request; a one-time list at start-up (``seed``) makes it complete
before the first cycle, and the adapters write their own successful writes through it so the next
cycle never acts on a view older than its own actions.

Objects are kept as plain dicts without ``managedFields``. Versions only move forward: an event
carrying an older ``resourceVersion`` than the stored object is ignored, and deletions leave a
tombstone so a late list cannot resurrect a deleted object.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Kind", "Store", "fingerprint", "object_key", "placement_fingerprint"]

Obj = dict[str, Any]


class Kind(StrEnum):
    """The kinds the operator watches."""

    NODE = "nodes"
    POD = "pods"
    POOL = "inferencepools"
    CONFIG = "gpupoolconfigs"
    SERVICE = "services"  # only the ones labelled as the operator's (the watch's selector)


def object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else str(meta["name"])


def _rv(obj: Mapping[str, Any]) -> int | None:
    raw = obj.get("metadata", {}).get("resourceVersion")
    try:
        return int(raw) if raw is not None else None
    except ValueError:  # opaque on other storage backends: then every event counts as newer
        return None


def _ready(obj: Mapping[str, Any]) -> str | None:
    conds = obj.get("status", {}).get("conditions", []) or []
    return next((str(c.get("status")) for c in conds if c.get("type") == "Ready"), None)


def fingerprint(kind: Kind, obj: Mapping[str, Any]) -> Any:
    """The part of an object the placement loop reacts to (heartbeats and our own status are not)."""
    meta = obj.get("metadata", {})
    spec = obj.get("spec", {}) or {}
    status = obj.get("status", {}) or {}
    if kind is Kind.NODE:
        return (meta.get("labels"), meta.get("annotations"), status.get("allocatable"),
                spec.get("unschedulable"), spec.get("taints"), _ready(obj), meta.get("deletionTimestamp"))
    if kind is Kind.POD:
        return (spec.get("nodeName"), status.get("phase"), _ready(obj), spec.get("schedulingGates"),
                meta.get("deletionTimestamp"), meta.get("labels"), meta.get("annotations"))
    if kind is Kind.SERVICE:
        return (meta.get("labels"), meta.get("ownerReferences"), spec.get("selector"), spec.get("ports"),
                meta.get("deletionTimestamp"))
    return (meta.get("generation"), meta.get("deletionTimestamp"))


def placement_fingerprint(kind: Kind, obj: Mapping[str, Any]) -> Any:
    """The part of an object the *plan* depends on: a pod turning Ready or losing its scheduling
    gate changes the status, not where replicas go, so it needs no new solve; Services never
    change a plan."""
    if kind is Kind.SERVICE:
        return None
    if kind is not Kind.POD:
        return fingerprint(kind, obj)
    meta = obj.get("metadata", {})
    spec = obj.get("spec", {}) or {}
    phase = (obj.get("status", {}) or {}).get("phase")
    return (spec.get("nodeName"), phase in ("Succeeded", "Failed"), meta.get("deletionTimestamp"),
            meta.get("labels"), meta.get("annotations"))


def _slim(obj: Mapping[str, Any]) -> Obj:
    out = dict(obj)
    meta = dict(out.get("metadata", {}))
    meta.pop("managedFields", None)
    out["metadata"] = meta
    return out


@dataclass
class Store:
    """Objects by kind and key (``namespace/name`` or ``name``); a version counter for changes."""

    objects: dict[Kind, dict[str, Obj]] = field(default_factory=lambda: {k: {} for k in Kind})
    tombstones: dict[Kind, dict[str, int]] = field(default_factory=lambda: {k: {} for k in Kind})
    version: int = 0
    placement_version: int = 0
    """Moves only when something the placement depends on changes (see :func:`placement_fingerprint`)."""

    def get(self, kind: Kind, key: str) -> Obj | None:
        return self.objects[kind].get(key)

    def all(self, kind: Kind) -> list[Obj]:
        return list(self.objects[kind].values())

    def upsert(self, kind: Kind, obj: Mapping[str, Any]) -> bool:
        """Store ``obj`` unless a newer version is already known; returns whether anything changed."""
        key = object_key(obj)
        rv = _rv(obj)
        dead = self.tombstones[kind].get(key)
        if dead is not None and rv is not None:
            if rv <= dead:
                return False
            del self.tombstones[kind][key]
        current = self.objects[kind].get(key)
        if current is not None and rv is not None:
            have = _rv(current)
            if have is not None and rv <= have:
                return False
        if kind is not Kind.SERVICE and (
                current is None or placement_fingerprint(kind, current) != placement_fingerprint(kind, obj)):
            self.placement_version += 1
        self.objects[kind][key] = _slim(obj)
        self.version += 1
        return True

    def replace(self, kind: Kind, obj: Mapping[str, Any]) -> None:
        """Store our own view of an object (e.g. marked as terminating) regardless of versions."""
        self.objects[kind][object_key(obj)] = _slim(obj)
        self.version += 1
        self.placement_version += kind is not Kind.SERVICE

    def delete(self, kind: Kind, obj: Mapping[str, Any]) -> bool:
        key = object_key(obj)
        rv = _rv(obj)
        if rv is not None:
            self.tombstones[kind][key] = max(rv, self.tombstones[kind].get(key, 0))
        if self.objects[kind].pop(key, None) is None:
            return False
        self.version += 1
        self.placement_version += kind is not Kind.SERVICE
        return True

    def apply_event(self, kind: Kind, event_type: str | None, obj: Mapping[str, Any]) -> bool:
        """One watch event (``ADDED``/``MODIFIED``/``DELETED``, or ``None`` while kopf lists).

        Returns whether the placement loop should look again: the object appeared, went away or
        changed in a way it reacts to (see :func:`fingerprint`).
        """
        if event_type == "DELETED":
            return self.delete(kind, obj)
        before = self.objects[kind].get(object_key(obj))
        if not self.upsert(kind, obj):
            return False
        return before is None or fingerprint(kind, before) != fingerprint(kind, obj)

    def seed(self, kind: Kind, items: Iterable[Mapping[str, Any]], list_version: str | None = None) -> None:
        """Merge a full list: add what is newer, drop what the list no longer has.

        An object missing from the list is dropped only when it is not newer than the list itself
        (a watch event or our own write may have added it after the list was taken).
        """
        seen: set[str] = set()
        for obj in items:
            seen.add(object_key(obj))
            self.upsert(kind, obj)
        at = _rv({"metadata": {"resourceVersion": list_version}})
        for key, obj in list(self.objects[kind].items()):
            if key in seen:
                continue
            rv = _rv(obj)
            if at is not None and rv is not None and rv > at:
                continue
            del self.objects[kind][key]
            self.version += 1
            self.placement_version += kind is not Kind.SERVICE
