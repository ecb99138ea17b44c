"""The slice of ``metav1.ObjectMeta`` gpupool reads; everything else the server sends is kept as is."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from ._base import ApiModel

__all__ = ["ObjectMeta"]


class ObjectMeta(ApiModel):
    """Standard object metadata (only the fields the operator reads are typed)."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    """Name of the object, unique within its namespace."""
    namespace: str | None = None
    """Namespace of the object (absent for cluster-scoped objects)."""
    generation: Annotated[int, Field(ge=0)] | None = None
    """Sequence number of the desired state, incremented by the server on every spec change."""
    resource_version: str | None = None
    """Opaque version for optimistic concurrency."""
    uid: str | None = None
    """Unique identifier assigned by the server."""
    labels: dict[str, str] | None = None
    """Labels of the object."""
    annotations: dict[str, str] | None = None
    """Annotations of the object."""
