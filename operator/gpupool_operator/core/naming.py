"""Names of the objects the operator creates: collision-free, DNS-1123, at most 63 characters.

Why a hash in every name: ``<pool>-<model>`` is ambiguous (pool ``a-b`` with model ``c`` and pool
``a`` with model ``b-c`` both give ``a-b-c``), and names cut at 63 characters collide too. Each
name keeps a readable prefix and ends in a short hash of ``(namespace, pool uid, model)``, so two
models of two pools never share a name, a pool deleted and made again (new uid) never meets its
predecessor's terminating pods, and the same replica always gets the same name (a retried create
answers "already exists" instead of duplicating). A purely computational module with no side-effects.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["MAX_NAME", "label_value", "pod_name", "service_name", "short_hash"]

MAX_NAME = 63
"""The longest name that is also a DNS label (hostnames, Service names, label values)."""
_HASH = 8
_REPLICA_DIGITS = 5  # room kept for the replica index, so the prefix never depends on it
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def short_hash(*parts: str, n: int = _HASH) -> str:
    """``n`` hex digits of SHA-256 over ``parts`` (separated, so ("a-b", "c") != ("a", "b-c"))."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:n]


def label_value(text: str) -> str:
    """``text`` as a label value (at most 63 characters; long values keep a hash suffix)."""
    if len(text) <= MAX_NAME:
        return text
    return text[: MAX_NAME - _HASH - 1].rstrip("-._") + "-" + short_hash(text)


def _prefix(pool: str, model: str, room: int) -> str:
    clean = _NOT_DNS.sub("-", f"{pool}-{model}".lower()).strip("-")
    return clean[:room].rstrip("-")


def pod_name(namespace: str, pool: str, uid: str, model: str, replica: int) -> str:
    """The pod of a model's ``replica``-th replica: ``<pool>-<model>-<hash>-<n>``, at most 63 characters."""
    room = MAX_NAME - (_HASH + 1) - (_REPLICA_DIGITS + 1)
    prefix = _prefix(pool, model, room)
    head = f"{prefix}-" if prefix else ""
    return f"{head}{short_hash(namespace, uid, model)}-{replica}"


def service_name(namespace: str, pool: str, uid: str, model: str) -> str:
    """The Service in front of a model's replicas: ``<pool>-<model>-<hash>``, an RFC 1035 label
    (starts with a letter, at most 63 characters)."""
    prefix = _prefix(pool, model, MAX_NAME - (_HASH + 1) - 1)
    name = f"{prefix}-{short_hash(namespace, uid, model)}" if prefix else short_hash(namespace, uid, model)
    return name if name[:1].isalpha() else "m" + name
