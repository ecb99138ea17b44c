"""Node objects carry NVIDIA's real GFD labels and device-plugin resources."""

from __future__ import annotations

import json

from gpupool_operator.local.nodes import MIG_LAYOUT_ANNOTATION, build_nodes, gpu_resources, node_list
from gpupool_operator.local.spec import ClusterSpec, parse


def _one(pool: dict[str, object]) -> dict[str, object]:
    spec = parse({"name": "c", "pools": [{"name": "p", "count": 1, **pool}]})
    (node,) = build_nodes(spec)
    return node


def test_whole_gpu_node() -> None:
    node = _one({"gpu": "H100-80GB", "gpusPerNode": 8})
    labels = node["metadata"]["labels"]  # type: ignore[index]
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/gpu.count"] == "8"
    assert labels["nvidia.com/gpu.family"] == "hopper"
    assert (labels["nvidia.com/gpu.compute.major"], labels["nvidia.com/gpu.compute.minor"]) == ("9", "0")
    assert labels["nvidia.com/mig.capable"] == "true"
    assert int(labels["nvidia.com/gpu.memory"]) > 80000
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"  # type: ignore[index]
    assert not any(k.startswith("nvidia.com/mig-") for k in node["status"]["allocatable"])  # type: ignore[index]
    assert json.loads(node["metadata"]["annotations"][MIG_LAYOUT_ANNOTATION]) == [{}] * 8  # type: ignore[index]


def test_mixed_strategy_advertises_one_resource_per_profile_and_whole_gpus() -> None:
    node = _one(
        {
            "gpu": "A100-80GB",
            "gpusPerNode": 4,
            "mig": {"strategy": "mixed", "gpus": [{"3g.40gb": 2}, {"1g.10gb+me": 1, "1g.10gb": 6}, {}, {}]},
        }
    )
    alloc = node["status"]["allocatable"]  # type: ignore[index]
    assert alloc["nvidia.com/gpu"] == "2"
    assert alloc["nvidia.com/mig-3g.40gb"] == "2"
    assert alloc["nvidia.com/mig-1g.10gb"] == "6"
    assert alloc["nvidia.com/mig-1g.10gb.me"] == "1"  # '+' becomes '.' in the resource name
    labels = node["metadata"]["labels"]  # type: ignore[index]
    assert labels["nvidia.com/mig.strategy"] == "mixed"
    assert labels["nvidia.com/mig-3g.40gb.count"] == "2"
    assert labels["nvidia.com/mig-3g.40gb.slices.gi"] == "3"
    assert labels["nvidia.com/mig.config.state"] == "success"


def test_single_strategy_renames_product_and_counts_slices_as_gpus() -> None:
    node = _one({"gpu": "A100-40GB", "gpusPerNode": 2, "mig": {"strategy": "single", "layout": {"1g.5gb": 7}}})
    labels = node["metadata"]["labels"]  # type: ignore[index]
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"
    assert labels["nvidia.com/gpu.count"] == "14"
    assert labels["nvidia.com/mig.config"] == "all-1g.5gb"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "14"  # type: ignore[index]


def test_cpu_pool_has_no_nvidia_labels_or_resources() -> None:
    node = _one({"cpu": 64, "memoryGiB": 256})
    assert not any(k.startswith("nvidia.com/") for k in node["metadata"]["labels"])  # type: ignore[index]
    assert node["status"]["allocatable"]["cpu"] == "64"  # type: ignore[index]
    assert node["status"]["allocatable"]["memory"] == "256Gi"  # type: ignore[index]


def test_spot_price_and_pool_labels(small_spec: ClusterSpec) -> None:
    nodes = build_nodes(small_spec)
    assert len(nodes) == small_spec.node_count
    assert len({n["metadata"]["name"] for n in nodes}) == len(nodes)
    spot = [n for n in nodes if n["metadata"]["labels"]["gpupool.io/price-tier"] == "spot"]
    assert spot
    assert all(n["metadata"]["annotations"]["gpupool.io/price-per-gpu-hour"] == "3.1" for n in spot)


def test_gpu_totals_match_spec(small_spec: ClusterSpec) -> None:
    total_gpus = 0
    for pool in small_spec.pools:
        res = gpu_resources(pool)
        layouts = pool.gpu_layouts()
        whole = sum(1 for lay in layouts if not lay)
        if pool.gpu:
            assert int(res["nvidia.com/gpu"]) == whole
        total_gpus += pool.count * len(layouts)
    assert total_gpus == small_spec.gpu_count
    assert node_list(small_spec)["kind"] == "List"
