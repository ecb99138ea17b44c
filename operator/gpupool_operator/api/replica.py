"""A pool's overrides of the cluster's replica pod defaults (``spec.replicaDefaults``).

The platform sets the defaults for every replica pod (``GPUPOOL_REPLICA_DEFAULTS``, from the Helm
chart: pod and container securityContext, resources); a pool may override them field by field.
Only fields that cannot raise a pod's privileges are offered: a team allowed to create
InferencePools must not get, through the operator, pods it could not create itself (no
``privileged``, no added capabilities, no host namespaces). Resources the plan decides (GPUs, MIG
slices, a CPU replica's cores and memory) always come from the plan.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from ._base import ApiModel

__all__ = ["ContainerSecurityDefaults", "PodSecurityDefaults", "ReplicaDefaults", "ReplicaResources", "ResourceList"]

RESOURCE_QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]+)?)(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$"
"""A non-negative resource quantity as Kubernetes writes one: 500m, 2, 1.5Gi, 512Mi."""

ResourceQuantity = Annotated[str, StringConstraints(pattern=RESOURCE_QUANTITY_PATTERN, max_length=24)]
Id = Annotated[int, Field(ge=0, le=2147483647)]


class PodSecurityDefaults(ApiModel):
    """The pod securityContext fields a pool may set."""

    run_as_user: Id | None = None
    """UID the replica's processes run as."""
    run_as_group: Id | None = None
    """GID the replica's processes run as."""
    run_as_non_root: bool | None = None
    """Refuse to start the replica as root."""
    fs_group: Id | None = None
    """Group that owns the replica's volumes."""


class ContainerSecurityDefaults(ApiModel):
    """The worker container's securityContext fields a pool may set."""

    run_as_user: Id | None = None
    """UID the worker runs as."""
    run_as_group: Id | None = None
    """GID the worker runs as."""
    run_as_non_root: bool | None = None
    """Refuse to start the worker as root."""
    read_only_root_filesystem: bool | None = None
    """Mount the worker's root filesystem read-only."""


class ResourceList(ApiModel):
    """Amounts of the host resources a pool may set."""

    cpu: ResourceQuantity | None = None
    """CPU (500m, 2)."""
    memory: ResourceQuantity | None = None
    """Memory (512Mi, 4Gi)."""
    ephemeral_storage: ResourceQuantity | None = Field(default=None, alias="ephemeral-storage")
    """Local scratch space (10Gi)."""


class ReplicaResources(ApiModel):
    """Host resources of the worker container, beside what the plan gives it."""

    requests: ResourceList | None = None
    """cpu, memory or ephemeral-storage requests (a GPU replica's host CPU and memory, say)."""
    limits: ResourceList | None = None
    """cpu, memory or ephemeral-storage limits."""


class ReplicaDefaults(ApiModel):
    """Per-pool overrides of the cluster's replica pod defaults, merged field by field over them."""

    pod_security_context: PodSecurityDefaults | None = None
    """Pod securityContext fields."""
    security_context: ContainerSecurityDefaults | None = None
    """Worker container securityContext fields."""
    resources: ReplicaResources | None = None
    """Worker container requests and limits of cpu, memory and ephemeral-storage."""
