"""Turn a cluster spec into real Node objects with NVIDIA GPU Feature Discovery labels.

The labels and resources are the genuine ones (see shared notes/domain.md), so the operator's
inventory adapter cannot tell a fake node from a real one: ``nvidia.com/gpu.product``,
``gpu.count``, ``gpu.memory`` (MiB), ``gpu.family``, ``gpu.compute.major/minor``, ``mig.capable``,
``mig.strategy``, the per-profile ``nvidia.com/mig-<profile>.*`` labels under ``mixed``, and the
allocatable ``nvidia.com/gpu`` / ``nvidia.com/mig-<profile>`` resources the device plugin would
advertise. Real clusters do not publish *which* GPU holds which MIG instances, so the generator also
writes the per-GPU layout to the ``gpupool.io/mig-layout`` annotation (the same annotation the
operator maintains on real nodes when it drives the MIG manager).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gpupool_operator.adapters import names
from gpupool_operator.local.cluster import KWOK_NODE_ANNOTATION
from gpupool_operator.local.spec import ClusterSpec, MigStrategy, PoolSpec

GPU = "nvidia.com/gpu"
MIG_LAYOUT_ANNOTATION = names.ANN_MIG_LAYOUT
POOL_LABEL = "gpupool.io/pool"
PRICE_TIER_LABEL = "gpupool.io/price-tier"
PRICE_ANNOTATION = "gpupool.io/price-per-gpu-hour"

Node = dict[str, Any]


def _mig_config_name(layouts: list[dict[str, int]]) -> str:
    """The ``nvidia.com/mig.config`` value the MIG manager would have applied for these layouts."""
    nonempty = [tuple(sorted((k, v) for k, v in lay.items() if v)) for lay in layouts]
    if not any(nonempty):
        return "all-disabled"
    if len(set(nonempty)) == 1 and all(nonempty):
        only = nonempty[0]
        if len(only) == 1:
            return f"all-{only[0][0]}"
        return "custom-" + "-".join(f"{n}x{p}" for p, n in only)
    return "custom-per-gpu"


def gpu_labels(pool: PoolSpec) -> dict[str, str]:
    """GFD labels (and GPU operator deploy labels) for one node of ``pool``."""
    product = pool.product
    if product is None:
        return {}
    layouts = pool.gpu_layouts()
    strategy = pool.mig.strategy if pool.mig else MigStrategy.NONE
    labels = {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product.product_label,
        "nvidia.com/gpu.count": str(pool.gpus_per_node),
        "nvidia.com/gpu.memory": str(product.memory_mib),
        "nvidia.com/gpu.family": product.family,
        "nvidia.com/gpu.compute.major": str(product.compute_major),
        "nvidia.com/gpu.compute.minor": str(product.compute_minor),
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.deploy.device-plugin": "true",
        "nvidia.com/gpu.deploy.gpu-feature-discovery": "true",
        "nvidia.com/mig.capable": "true" if product.mig_capable else "false",
        "nvidia.com/mps.capable": "false",
    }
    if product.mig_capable:
        labels["nvidia.com/mig.strategy"] = strategy.value if strategy is not MigStrategy.NONE else "mixed"
        labels["nvidia.com/gpu.deploy.mig-manager"] = "true"
        labels[names.LABEL_MIG_CONFIG] = _mig_config_name(layouts)
        labels[names.LABEL_MIG_CONFIG_STATE] = "success"
    totals: Counter[str] = Counter()
    for layout in layouts:
        totals.update({k: v for k, v in layout.items() if v})
    if strategy is MigStrategy.SINGLE:
        (profile_name,) = totals
        prof = product.profile(profile_name)
        labels["nvidia.com/gpu.product"] = f"{product.product_label}-MIG-{profile_name}"
        labels["nvidia.com/gpu.count"] = str(totals[profile_name])
        labels["nvidia.com/gpu.memory"] = str(prof.memory_mib)
    elif strategy is MigStrategy.MIXED:
        for name, count in sorted(totals.items()):
            prof = product.profile(name)
            prefix = prof.resource_name
            labels[f"{prefix}.count"] = str(count)
            labels[f"{prefix}.memory"] = str(prof.memory_mib)
            labels[f"{prefix}.multiprocessors"] = str(prof.multiprocessors)
            labels[f"{prefix}.slices.gi"] = str(prof.compute_slices)
            labels[f"{prefix}.slices.ci"] = str(prof.compute_slices)
            labels[f"{prefix}.engines.copy"] = str(prof.compute_slices)
    return labels


def gpu_resources(pool: PoolSpec) -> dict[str, str]:
    """Extended resources as the NVIDIA device plugin advertises them for ``pool``'s nodes."""
    product = pool.product
    if product is None:
        return {}
    strategy = pool.mig.strategy if pool.mig else MigStrategy.NONE
    layouts = pool.gpu_layouts()
    if strategy is MigStrategy.NONE:
        return {GPU: str(pool.gpus_per_node)}
    totals: Counter[str] = Counter()
    for layout in layouts:
        totals.update({k: v for k, v in layout.items() if v})
    if strategy is MigStrategy.SINGLE:
        return {GPU: str(sum(totals.values()))}
    resources = {GPU: str(sum(1 for layout in layouts if not any(layout.values())))}
    for name, count in sorted(totals.items()):
        resources[product.profile(name).resource_name] = str(count)
    return resources


def node_name(cluster: ClusterSpec, pool: PoolSpec, index: int) -> str:
    return f"{pool.name}-{index:04d}"


def build_node(cluster: ClusterSpec, pool: PoolSpec, index: int) -> Node:
    """One Node manifest (metadata + status) for the ``index``-th node of ``pool``."""
    name = node_name(cluster, pool, index)
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        POOL_LABEL: pool.name,
        PRICE_TIER_LABEL: pool.price_tier.value,
        "gpupool.io/cluster": cluster.name,
        **gpu_labels(pool),
        **pool.labels,
    }
    if pool.instance_type:
        labels["node.kubernetes.io/instance-type"] = pool.instance_type
    key, value = KWOK_NODE_ANNOTATION
    annotations = {key: value, "node.alpha.kubernetes.io/ttl": "0"}
    if pool.product is not None and pool.product.mig_capable:
        annotations[MIG_LAYOUT_ANNOTATION] = json.dumps(pool.gpu_layouts(), sort_keys=True, separators=(",", ":"))
    if pool.price_per_gpu_hour is not None:
        annotations[PRICE_ANNOTATION] = f"{pool.price_per_gpu_hour:g}"
    resources = {
        "cpu": str(pool.cpu),
        "memory": f"{pool.memory_gib}Gi",
        "pods": str(pool.max_pods),
        "ephemeral-storage": "1Ti",
        **gpu_resources(pool),
    }
    spec: dict[str, Any] = {}
    if pool.taints:
        spec["taints"] = [t.model_dump(exclude_defaults=False) for t in pool.taints]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": spec,
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
                "osImage": "kwok fake node",
                "kernelVersion": "",
                "containerRuntimeVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
            "phase": "Running",
        },
    }


def build_nodes(cluster: ClusterSpec) -> list[Node]:
    return [build_node(cluster, pool, i) for pool in cluster.pools for i in range(pool.count)]


def node_list(cluster: ClusterSpec) -> dict[str, Any]:
    """All nodes as one ``v1/List``, the shape ``kubectl get nodes -o yaml`` prints."""
    return {"apiVersion": "v1", "kind": "List", "items": build_nodes(cluster)}


def _progress(done: int, total: int, started: float, out: Any = sys.stderr) -> None:
    """A bar redrawn in place on a terminal; plain lines (every 250 nodes and at the end) in a log."""
    tty = out.isatty()
    if not tty and done % 250 and done != total:
        return
    width = 30
    filled = int(width * done / max(total, 1))
    rate = done / max(time.monotonic() - started, 1e-6)
    line = f"  nodes [{'#' * filled}{'.' * (width - filled)}] {done}/{total} ({rate:.0f}/s)"
    out.write(("\r" + line + ("\n" if done == total else "")) if tty else line + "\n")
    out.flush()


def register_nodes(
    api_client: Any,
    nodes: Iterable[Node],
    workers: int = 16,
    progress: Callable[[int, int, float], None] | None = _progress,
) -> int:
    """Create (or replace) the nodes through the API, in parallel; returns how many were written.

    Idempotent: an existing node of the same name is replaced, so re-running after a crash
    converges to the spec instead of failing on ``AlreadyExists``.
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core: Any = client.CoreV1Api(api_client)  # manifests are plain dicts, which the client accepts
    items = list(nodes)
    started = time.monotonic()
    done = 0

    def one(node: Node) -> None:
        try:
            core.create_node(node)
        except ApiException as err:
            if err.status != 409:
                raise
            name = node["metadata"]["name"]
            current = core.read_node(name)
            node = {**node, "metadata": {**node["metadata"], "resourceVersion": current.metadata.resource_version}}
            core.replace_node(name, node)
            core.patch_node_status(name, {"status": {k: node["status"][k] for k in ("capacity", "allocatable")}})

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(one, items):
            done += 1
            if progress and (done % 50 == 0 or done == len(items)):
                progress(done, len(items), started)
    return done
