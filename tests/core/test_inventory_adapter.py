"""Node and Pod objects (as kubectl prints them) -> the core's inventory snapshot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gpupool_operator.adapters.inventory import (
    node_from_object,
    parse_cpu,
    parse_memory_mib,
    snapshot_from_objects,
)
from gpupool_operator.core.cost import NodeOverride, Prices, PriceTier
from gpupool_operator.core.inventory import MigStrategy
from gpupool_operator.core.mig import placement_counts
from gpupool_operator.local.nodes import build_nodes
from gpupool_operator.local.spec import load

ROOT = Path(__file__).resolve().parents[2]


def node(name: str, labels: dict[str, str], alloc: dict[str, str], annotations: dict[str, str] | None = None,
         **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
            "spec": extra.pop("spec", {}), "status": {"allocatable": alloc, **extra}}


def a100(config: str, alloc_extra: dict[str, str], **labels: str) -> dict[str, Any]:
    base = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.count": "2",
            "nvidia.com/gpu.memory": "81920", "nvidia.com/mig.capable": "true",
            "nvidia.com/mig.strategy": "mixed", "nvidia.com/mig.config": config,
            "nvidia.com/mig.config.state": "success", **labels}
    return node("a", base, {"cpu": "96", "memory": "1152Gi", **alloc_extra})


def test_lead_generator_nodes_round_trip() -> None:
    objects = build_nodes(load(ROOT / "examples" / "clusters" / "small-hetero.yaml"))
    snap = snapshot_from_objects(objects)
    by_name = {n.name: n for n in snap.nodes}
    mig_node = by_name["a100-mig-0000"]
    assert mig_node.product == "A100-80GB"
    assert mig_node.mig_strategy is MigStrategy.MIXED
    assert dict(placement_counts(mig_node.gpus[2].layout or ())) == {"1g.10gb": 7}
    assert mig_node.gpus[4].layout is None
    spot = by_name["b200-spot-0000"]
    assert spot.price_tier is PriceTier.SPOT
    assert spot.gpu_price == pytest.approx(3.10)  # the price annotation wins
    assert by_name["h100-0000"].gpu_price == pytest.approx(6.88)
    assert not by_name["cpu-0000"].gpus
    assert by_name["cpu-0000"].cpu_millis == 64000
    assert snap.gpu_count == sum(len(n.gpus) for n in snap.nodes)


@pytest.mark.parametrize(
    ("config", "alloc", "expected"),
    [
        ("all-1g.10gb", {"nvidia.com/mig-1g.10gb": "14"}, {"1g.10gb": 7}),
        ("all-balanced", {}, {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}),
        ("all-3g.40gb", {}, {"3g.40gb": 2}),
    ],
)
def test_layout_from_well_known_mig_config(config: str, alloc: dict[str, str], expected: dict[str, int]) -> None:
    n = node_from_object(a100(config, alloc))
    assert all(dict(placement_counts(g.layout or ())) == expected for g in n.gpus)


def test_all_disabled_is_whole_gpus() -> None:
    n = node_from_object(a100("all-disabled", {"nvidia.com/gpu": "2"}))
    assert [g.layout for g in n.gpus] == [None, None]


def test_custom_config_spreads_allocatable_deterministically() -> None:
    n = node_from_object(a100("custom-x", {"nvidia.com/gpu": "0", "nvidia.com/mig-3g.40gb": "2",
                                           "nvidia.com/mig-1g.10gb": "5"}))
    layouts = [dict(placement_counts(g.layout or ())) for g in n.gpus]
    assert layouts == [{"3g.40gb": 2}, {"1g.10gb": 5}]


def test_annotation_wins_and_bad_annotation_falls_back_with_warning() -> None:
    obj = a100("all-balanced", {}, )
    obj["metadata"]["annotations"]["gpupool.io/mig-layout"] = json.dumps([{"7g.80gb": 1}, {}])
    n = node_from_object(obj)
    assert dict(placement_counts(n.gpus[0].layout or ())) == {"7g.80gb": 1}
    assert n.gpus[1].layout is None
    obj["metadata"]["annotations"]["gpupool.io/mig-layout"] = json.dumps([{"7g.80gb": 2}])
    n = node_from_object(obj)
    assert any("invalid layout" in w for w in n.warnings)
    assert dict(placement_counts(n.gpus[0].layout or ())) == {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}


def test_single_strategy_counts_gpus_not_slices() -> None:
    labels = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", "nvidia.com/gpu.count": "14",
              "nvidia.com/gpu.memory": "4864", "nvidia.com/mig.strategy": "single",
              "nvidia.com/mig.config": "all-1g.5gb", "nvidia.com/mig.config.state": "success"}
    n = node_from_object(node("s", labels, {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "14"}))
    assert n.product == "A100-40GB"
    assert len(n.gpus) == 2
    assert n.mig_strategy is MigStrategy.SINGLE


def test_pending_mig_manager_and_not_ready_node() -> None:
    n = node_from_object(a100("all-1g.10gb", {}, **{"nvidia.com/mig.config.state": "pending"}))
    assert not n.mig_ready
    assert any("pending" in w for w in n.warnings)
    obj = a100("all-disabled", {})
    obj["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    assert not node_from_object(obj).schedulable
    obj = a100("all-disabled", {})
    obj["spec"] = {"unschedulable": True}
    assert not node_from_object(obj).schedulable


def test_unknown_product_is_a_whole_gpu_with_a_warning() -> None:
    labels = {"nvidia.com/gpu.product": "NVIDIA-L4", "nvidia.com/gpu.count": "4", "nvidia.com/gpu.memory": "23034"}
    n = node_from_object(node("l4", labels, {"cpu": "48", "memory": "192Gi", "nvidia.com/gpu": "4"}))
    assert n.product is None
    assert n.product_label == "NVIDIA-L4"
    assert len(n.gpus) == 4
    assert n.gpu_price > 0
    assert any("unknown GPU product" in w for w in n.warnings)


def test_the_operators_replicas_are_recognised() -> None:
    """Pods as the operator writes them: owner from ``gpupool.io/demand``, GPUs from ``gpupool.io/gpus``."""
    obj = a100("all-disabled", {"nvidia.com/gpu": "2"})
    pod = {"metadata": {"name": "p-m-0", "namespace": "ns",
                        "labels": {"app.kubernetes.io/managed-by": "gpupool", "gpupool.io/inferencepool": "p",
                                   "gpupool.io/model": "m"},
                        "annotations": {"gpupool.io/demand": "ns/p/m", "gpupool.io/gpus": "1"}},
           "spec": {"nodeName": "a", "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
           "status": {"phase": "Running"}}
    (h,) = snapshot_from_objects([obj], [pod]).nodes[0].holdings
    assert h.owner == "ns/p/m"
    assert h.gpus == (1,)


def test_pods_become_holdings() -> None:
    obj = a100("all-balanced", {})
    pods = [
        {"metadata": {"name": "mine-0", "namespace": "ns",
                      "labels": {"gpupool.io/inferencepool": "p", "gpupool.io/model": "m"}},
         "spec": {"nodeName": "a", "containers": [{"resources": {"limits": {"nvidia.com/mig-3g.40gb": "1"},
                                                                 "requests": {"cpu": "2", "memory": "4Gi"}}}]},
         "status": {"phase": "Running"}},
        {"metadata": {"name": "other", "namespace": "x"},
         "spec": {"nodeName": "a", "containers": [{"resources": {"limits": {"nvidia.com/mig-3g.40gb": "1"}}}]},
         "status": {"phase": "Running"}},
        {"metadata": {"name": "done", "namespace": "x"},
         "spec": {"nodeName": "a", "containers": [{"resources": {"limits": {"nvidia.com/mig-3g.40gb": "1"}}}]},
         "status": {"phase": "Succeeded"}},
    ]
    snap = snapshot_from_objects([obj], pods)
    holdings = {h.pod: h for h in snap.nodes[0].holdings}
    assert set(holdings) == {"ns/mine-0", "x/other"}
    assert holdings["ns/mine-0"].owner == "ns/p/m"
    assert holdings["ns/mine-0"].instance == (0, "3g.40gb", 4)
    assert holdings["ns/mine-0"].cpu_millis == 2000
    assert holdings["x/other"].owner is None
    assert holdings["x/other"].instance == (1, "3g.40gb", 4)


def test_price_overrides_by_selector() -> None:
    prices = Prices(gpu={"A100-80GB": 3.0}, overrides=(
        NodeOverride("spot", {"karpenter.sh/capacity-type": "spot"}, tier=PriceTier.SPOT, multiplier=0.3),
    ))
    obj = a100("all-disabled", {}, **{"karpenter.sh/capacity-type": "spot"})
    n = node_from_object(obj, prices=prices)
    assert n.price_tier is PriceTier.SPOT
    assert n.gpu_price == pytest.approx(0.9)


@pytest.mark.parametrize(("text", "millis"), [("96", 96000), ("95500m", 95500), ("1.5", 1500)])
def test_parse_cpu(text: str, millis: int) -> None:
    assert parse_cpu(text) == millis


@pytest.mark.parametrize(("text", "mib"), [("1Gi", 1024), ("1048576Ki", 1024), ("8G", 7629), ("1073741824", 1024),
                                           ("1e9", 953), ("2E", 2 * 10**18 // 2**20)])
def test_parse_memory(text: str, mib: int) -> None:
    assert parse_memory_mib(text) == mib


def test_bad_quantity_is_an_error() -> None:
    with pytest.raises(ValueError, match="memory quantity"):
        parse_memory_mib("lots")


def test_mig_memory_labels_size_the_slices() -> None:
    """``nvidia.com/mig-<profile>.memory`` (MiB) is the instance's real usable memory: it wins over
    the catalog's figure; without the label the catalog's real per-profile figure applies (an
    A100-80GB 1g.10gb holds 9728 MiB, not 10 GiB), so a model that fits the name but not the
    device goes elsewhere."""
    from gpupool_operator.core.demand import Accelerator, Demand, ShapeKind
    from gpupool_operator.core.solver import solve
    from gpupool_operator.core.verify import problems

    labelled = a100("all-1g.10gb", {"nvidia.com/mig-1g.10gb": "14"},
                    **{"nvidia.com/mig-1g.10gb.memory": "9984", "nvidia.com/mig-1g.10gb.count": "14",
                       "nvidia.com/mig-1g.10gb.me.memory": "9700", "nvidia.com/mig-7g.80gb.memory": "bad"})
    n = node_from_object(labelled)
    assert dict(n.mig_memory) == {"1g.10gb": 9984, "1g.10gb+me": 9700}
    plain = node_from_object(a100("all-1g.10gb", {"nvidia.com/mig-1g.10gb": "14"}))
    assert plain.mig_memory == ()

    d = Demand("ns/m", 1, 9800, accelerators=(Accelerator(ShapeKind.MIG),))  # 9.57 GiB: over 9728 MiB
    for snap, profile in ((snapshot_from_objects([labelled]), "1g.10gb"),
                          (snapshot_from_objects([a100("all-1g.10gb", {"nvidia.com/mig-1g.10gb": "14"})]),
                           "1g.20gb")):
        plan = solve(snap, [d])
        assert problems(snap, [d], plan) == []
        assert [a.shape.profile for a in plan.assignments] == [profile]
