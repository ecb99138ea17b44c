"""Is this object ours? The one rule: proof by ownerReference, never by labels.

A pod or Service belongs to an InferencePool only when it is in the pool's namespace and carries
an ownerReference to that pool's uid (what controller-runtime and the garbage collector go by).
Labels and the ``gpupool.io/demand`` annotation can be copied by anyone who can create a pod: a
pod elsewhere that copies them is never counted, never deleted, and gets a Warning event
(:func:`impersonates`). Pure functions over API objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpupool_operator.adapters import names
from gpupool_operator.api import GROUP

__all__ = ["PoolIndex", "impersonates", "owner_uid", "owning_pool"]

Obj = Mapping[str, Any]
PoolIndex = Mapping[str, str]
"""Pool uid -> ``namespace/name`` of every live pool."""


def owner_uid(obj: Obj) -> str | None:
    """The uid of the InferencePool an object names as its owner, if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("kind") == "InferencePool" and str(ref.get("apiVersion", "")).split("/", 1)[0] == GROUP:
            return str(ref.get("uid") or "") or None
    return None


def owning_pool(obj: Obj, pools: PoolIndex, uid: str | None = None) -> str | None:
    """``namespace/name`` of the pool that owns ``obj``: its ownerReference names a live pool's uid
    and the pool lives in the object's namespace. ``uid`` saves reading the references again."""
    found = pools.get(uid if uid is not None else owner_uid(obj) or "")
    if found is None:
        return None
    namespace = obj.get("metadata", {}).get("namespace")
    return found if found.split("/", 1)[0] == namespace else None


def impersonates(obj: Obj) -> bool:
    """Whether ``obj`` carries the operator's replica labels (managed-by and the demand annotation)
    without being proven ours: worth a Warning, never an action."""
    meta = obj.get("metadata", {})
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY and names.ANN_DEMAND in annotations
