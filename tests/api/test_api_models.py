"""The pydantic models: manifests parse, round-trip, default like the server, and reject bad input."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import yaml
from api_cases import ALL_CASES, EXAMPLES, VALID_VARIANTS, Case, base_config, base_pool
from pydantic import BaseModel, ValidationError

from gpupool_operator.api import (
    CapacityType,
    Condition,
    ConditionStatus,
    ConditionType,
    GPUPoolConfig,
    HardwareType,
    InferencePool,
    InferencePoolSpec,
    InferencePoolStatus,
    ModelStatus,
    PlacementStrategy,
    PoolDefaults,
    Precision,
    ReplicaPlacement,
    default_config,
    find_condition,
    format_decimal,
    mig_resource_name,
    parse_duration,
    parse_quantity,
    set_condition,
)
from gpupool_operator.api.config import PRICE_TABLES
from gpupool_operator.api.types import GPU_PRODUCT_PATTERN, MIG_PROFILE_PATTERN
from gpupool_operator.core import catalog

KINDS: dict[str, type[BaseModel]] = {"InferencePool": InferencePool, "GPUPoolConfig": GPUPoolConfig}


def _load(obj: dict[str, Any]) -> BaseModel:
    return KINDS[obj["kind"]].model_validate(obj)


def _error_paths(exc: ValidationError) -> list[tuple[str, str]]:
    """(dotted field path with [i] indices, message) for each error, as the API server writes paths."""
    out = []
    for err in exc.errors():
        path = ""
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        out.append((path, err["msg"]))
    return out


def _names_field(exc: ValidationError, field: str) -> bool:
    """Whether some error is at ``field``, or at a parent of it with the rest named in the message."""
    for path, msg in _error_paths(exc):
        if path == field:
            return True
        if field.startswith(path) and field[len(path):].lstrip(".") in msg:
            return True
    return False


# -- examples and round trips -------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_parses_and_round_trips(path: Any) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs
    for doc in docs:
        obj = _load(doc)
        again = _load(obj.model_dump(mode="json", by_alias=True, exclude_none=True))
        assert again == obj


def test_at_least_three_realistic_pool_examples() -> None:
    pools = [InferencePool.model_validate(d) for p in EXAMPLES for d in yaml.safe_load_all(p.read_text())
             if d["kind"] == "InferencePool"]
    assert any(m.gpus_per_replica >= 2 for p in pools for m in p.spec.models), "an LLM with tensor parallelism"
    assert any(all(h.type is HardwareType.MIG for h in m.hardware) for p in pools for m in p.spec.models)
    assert any(m.hardware[0].type is not HardwareType.CPU and m.allows_cpu for p in pools for m in p.spec.models)


def test_wire_format_is_camel_case_and_python_is_snake_case() -> None:
    pool = InferencePool.model_validate(base_pool())
    model = pool.spec.models[0]
    assert model.accelerator_memory == "8Gi"
    assert model.max_replicas == 3
    wire = pool.to_wire()
    assert set(wire["spec"]["models"][0]) >= {"acceleratorMemory", "gpusPerReplica", "maxReplicas", "targetQueueDepth"}
    assert "accelerator_memory" not in str(wire)


def test_snake_case_construction_is_accepted() -> None:
    spec = InferencePoolSpec.model_validate(
        {
            "models": [
                {
                    "name": "m",
                    "source": {"uri": "hf://a/b"},
                    "accelerator_memory": "1Gi",
                    "hardware": [{"type": "GPU", "gpu": {"product": "A100-40GB"}}],
                    "max_replicas": 1,
                }
            ]
        }
    )
    assert spec.models[0].hardware[0].resource_name == "nvidia.com/gpu"


def test_python_defaults_are_the_schema_defaults() -> None:
    model = InferencePool.model_validate(base_pool()).spec.models[0]
    assert model.engine.precision is Precision.FP16
    assert model.engine.max_batch_size == 32
    assert model.engine.max_queue_delay_seconds == pytest.approx(0.005)
    assert model.gpus_per_replica == 1
    assert model.target_queue_depth == 8
    assert model.source.format.value == "SafeTensors"


def test_derived_quantities_for_the_placement_engine() -> None:
    manifest = base_pool()
    manifest["spec"]["models"][0].update(
        acceleratorMemory="140Gi", gpusPerReplica=2, hardware=[{"type": "GPU", "gpu": {"product": "H100-80GB"}}]
    )
    model = InferencePool.model_validate(manifest).spec.models[0]
    assert model.accelerator_memory_bytes == 140 * 2**30
    assert model.memory_per_gpu_bytes == 70 * 2**30
    assert not model.allows_cpu
    hw = InferencePool.model_validate(base_pool()).spec.models[0].hardware
    assert [h.resource_name for h in hw] == ["nvidia.com/mig-1g.10gb", "nvidia.com/gpu", "cpu"]
    assert hw[0].inferences_per_second == Decimal(100)


# -- invalid input ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_models_reject_invalid_manifest_naming_the_field(case: Case) -> None:
    with pytest.raises(ValidationError) as info:
        _load(case.manifest())
    assert _names_field(info.value, case.expected_python_field), _error_paths(info.value)


@pytest.mark.parametrize("name", sorted(VALID_VARIANTS))
def test_valid_variants_are_accepted(name: str) -> None:
    obj = VALID_VARIANTS[name]()
    assert _load(obj).model_dump(mode="json", by_alias=True, exclude_none=True)["kind"] == obj["kind"]


def test_there_are_enough_distinct_invalid_cases() -> None:
    ids = [c.id for c in ALL_CASES]
    assert len(ids) == len(set(ids))
    assert len({c.field for c in ALL_CASES}) >= 15


def test_scale_to_zero_allows_min_replicas_zero() -> None:
    manifest = base_pool()
    manifest["spec"]["models"][0]["minReplicas"] = 0
    manifest["spec"]["scaling"] = {"scaleToZero": True}
    assert InferencePool.model_validate(manifest).spec.models[0].min_replicas == 0


def test_decimals_reject_floats_and_keep_exact_values() -> None:
    manifest = base_pool()
    manifest["spec"]["budget"] = {"maxUsdPerHour": "12.50"}
    pool = InferencePool.model_validate(manifest)
    assert pool.spec.budget is not None
    assert pool.spec.budget.max_usd_per_hour == Decimal("12.5")
    assert pool.to_wire()["spec"]["budget"] == {"maxUsdPerHour": "12.5"}


# -- status -------------------------------------------------------------------------------------


NOW = datetime(2026, 11, 22, 18, 30, 5, 123456, tzinfo=UTC)


def _status() -> InferencePoolStatus:
    return InferencePoolStatus(
        observed_generation=3,
        conditions=[
            Condition(type=ConditionType.READY, status=ConditionStatus.TRUE, last_transition_time=NOW,
                      reason="AllReplicasReady", message="2/2 replicas ready", observed_generation=3),
        ],
        models=[
            ModelStatus(
                name="m0",
                desired_replicas=2,
                ready_replicas=2,
                replicas=[
                    ReplicaPlacement(pod="case-m0-0", node="gpu-node-1", resource="nvidia.com/mig-1g.10gb",
                                     gpu_product="H100-80GB", ready=True, usd_per_hour=Decimal("0.98286")),
                    ReplicaPlacement(pod="case-m0-1", node="cpu-node-1", resource="cpu", count=4, ready=True,
                                     usd_per_hour=Decimal("0.192")),
                ],
                queue_depth=5,
                inferences_per_second=Decimal("145.5"),
                usd_per_hour=Decimal("1.17486"),
                usd_per_million_inferences=Decimal("2.243"),
            )
        ],
        model_count=1,
        ready_models=1,
        desired_replicas=2,
        ready_replicas=2,
        usd_per_hour=Decimal("1.17486"),
        usd_per_million_inferences=Decimal("2.243"),
    )


def test_status_serialises_like_the_api_server_stores_it() -> None:
    wire = _status().to_wire()
    cond = wire["conditions"][0]
    assert cond["lastTransitionTime"] == "2026-11-22T18:30:05Z"
    assert cond["type"] == "Ready"
    assert cond["status"] == "True"
    assert wire["usdPerHour"] == "1.17486"
    assert wire["models"][0]["replicas"][0]["resource"] == "nvidia.com/mig-1g.10gb"
    assert InferencePoolStatus.model_validate(wire) == _status()


def test_status_patch_body() -> None:
    pool = InferencePool.model_validate(base_pool())
    pool.status = _status()
    body = pool.status_patch()
    assert set(body) == {"status"}
    assert body["status"]["readyReplicas"] == 2


def test_status_rejects_an_unknown_resource() -> None:
    with pytest.raises(ValidationError):
        ReplicaPlacement(resource="nvidia.com/mig-3g40gb")


def test_set_condition_keeps_transition_time_while_status_holds() -> None:
    first = Condition(type="Placed", status=ConditionStatus.FALSE, last_transition_time=NOW, reason="Unplaceable")
    later = NOW + timedelta(minutes=5)
    same = first.model_copy(update={"last_transition_time": later, "message": "still no H100"})
    conds = set_condition([first], same)
    assert conds[0].last_transition_time == NOW.replace(microsecond=0)
    assert conds[0].message == "still no H100"
    flipped = Condition(type="Placed", status=ConditionStatus.TRUE, last_transition_time=later, reason="Placed")
    conds = set_condition(conds, flipped)
    assert len(conds) == 1
    assert conds[0].last_transition_time == later.replace(microsecond=0)
    ready = Condition(type="Ready", status=ConditionStatus.TRUE, last_transition_time=later, reason="AllReplicasReady")
    conds = set_condition(conds, ready)
    assert [c.type for c in conds] == ["Placed", "Ready"]
    assert find_condition(conds, "Ready") == ready
    assert find_condition(conds, "Degraded") is None


def test_timestamps_need_a_zone_and_normalise_to_utc() -> None:
    with pytest.raises(ValidationError):
        Condition(type="Ready", status="True", last_transition_time=datetime(2026, 1, 1), reason="X")
    cest = timezone(timedelta(hours=2))
    cond = Condition(type="Ready", status="True", last_transition_time=datetime(2026, 1, 1, 2, tzinfo=cest), reason="X")
    assert cond.to_wire()["lastTransitionTime"] == "2026-01-01T00:00:00Z"


# -- cluster configuration ----------------------------------------------------------------------


def test_default_config_is_the_aws_table_with_sources() -> None:
    config = default_config()
    assert config.metadata.name == "default"
    assert config.spec.gpu_price("H100-80GB") == Decimal("6.88")
    assert config.spec.gpu_price("A100-40GB") == Decimal("2.74")
    assert config.spec.usd_per_vcpu_hour == Decimal("0.048")
    assert all(p.source for p in config.spec.gpu_prices)
    assert default_config("lambda").spec.gpu_price("H100-80GB") == Decimal("3.99")
    with pytest.raises(ValueError, match="unknown price table"):
        default_config("azure")


def test_price_tables_name_catalog_products() -> None:
    keys = set(catalog.product_keys())
    for provider, table in PRICE_TABLES.items():
        for product, _, _ in table:
            assert product in keys, f"{provider}: {product} is not a catalog key"


def test_patterns_accept_every_catalog_product_and_profile() -> None:
    import re

    for product in catalog.PRODUCTS:
        assert re.match(GPU_PRODUCT_PATTERN, product.key), product.key
        for label in product.product_labels:
            assert re.match(GPU_PRODUCT_PATTERN, label), label
        for profile in product.mig_profiles:
            assert re.match(MIG_PROFILE_PATTERN, profile.name), profile.name
            assert mig_resource_name(profile.name) == profile.resource_name


def test_pool_defaults_fill_what_the_pool_leaves_unset() -> None:
    defaults = PoolDefaults()
    plain = InferencePool.model_validate(base_pool()).spec
    eff = defaults.apply(plain)
    assert eff.placement_strategy is PlacementStrategy.COST
    assert eff.scale_down_stabilization_seconds == 300
    assert eff.scale_up_stabilization_seconds == 0
    assert not eff.scale_to_zero
    assert eff.max_usd_per_hour is None
    manifest = base_pool()
    manifest["spec"].update(
        placementStrategy="Spread", budget={"maxUsdPerHour": "40"},
        scaling={"scaleDownStabilizationWindow": "1m30s", "scaleToZero": True},
    )
    eff = defaults.apply(InferencePool.model_validate(manifest).spec)
    assert eff.placement_strategy is PlacementStrategy.SPREAD
    assert eff.scale_down_stabilization_seconds == 90
    assert eff.scale_to_zero
    assert eff.scale_to_zero_after_seconds == 900
    assert eff.max_usd_per_hour == Decimal(40)


def test_config_without_spec_gets_defaults() -> None:
    config = GPUPoolConfig.model_validate({"apiVersion": "gpupool.io/v1alpha1", "kind": "GPUPoolConfig",
                                           "metadata": {"name": "default"}})
    assert config.spec.mig.policy.value == "Any"
    assert config.spec.defaults.placement_strategy is PlacementStrategy.COST


# -- scalar parsers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512Mi", 512 * 2**20), ("40Gi", 40 * 2**30), ("1.5Ti", 3 * 2**39), ("80G", 80 * 10**9), ("1000", 1000),
     ("0.5Gi", 2**29), ("1k", 1000), ("0.5", 1), ("0.001Ki", 2), ("8388607Ti", 8388607 * 2**40),
     ("8388608Ti", 2**63 - 1), ("999999999.999T", 999999999999 * 10**9)],  # rounded up; binary SI capped
)
def test_parse_quantity(text: str, expected: int) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "0", "0Gi", "-1Gi", "40GB", "40 Gi", "1e3", "Gi", "40gi"])
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("5ms", 0.005), ("30s", 30), ("5m", 300), ("1h", 3600), ("1m30s", 90), ("0s", 0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5 s", "1d", "-5s", "5.5s", "123456s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [(Decimal("6.880"), "6.88"), (Decimal(100), "100"), (Decimal("1E+2"), "100"), (Decimal("0.0000004"), "0"),
     (Decimal("2.2430000001"), "2.243")],
)
def test_format_decimal(value: Decimal, text: str) -> None:
    assert format_decimal(value) == text


def test_models_are_independent_copies() -> None:
    manifest = base_pool()
    pool = InferencePool.model_validate(copy.deepcopy(manifest))
    pool.spec.models[0].max_replicas = 9
    assert InferencePool.model_validate(manifest).spec.models[0].max_replicas == 3


@pytest.mark.parametrize(
    "product", ["H100-80GB", "GB200", "NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-80GB-PCIe", "Tesla-T4", "NVIDIA-L4"]
)
def test_gpu_products_accept_short_names_and_real_label_values(product: str) -> None:
    manifest = base_pool()
    manifest["spec"]["models"][0]["hardware"][1]["gpu"]["product"] = product
    assert InferencePool.model_validate(manifest).spec.models[0].hardware[1].gpu is not None


@pytest.mark.parametrize(("profile", "resource"), [("1g.10gb+me", "nvidia.com/mig-1g.10gb.me"),
                                                   ("1g.23gb+gfx", "nvidia.com/mig-1g.23gb.gfx"),
                                                   ("7g.141gb", "nvidia.com/mig-7g.141gb")])
def test_mig_profiles_map_to_device_plugin_resources(profile: str, resource: str) -> None:
    manifest = base_pool()
    manifest["spec"]["models"][0]["hardware"][0]["mig"]["profile"] = profile
    option = InferencePool.model_validate(manifest).spec.models[0].hardware[0]
    assert option.resource_name == resource
    assert ReplicaPlacement(resource=resource).resource == resource


def test_status_accepts_whatever_product_a_node_reports() -> None:
    placement = ReplicaPlacement(resource="nvidia.com/gpu", gpu_product="NVIDIA-A100-SXM4-40GB-MIG-1g.5gb")
    assert placement.to_wire()["gpuProduct"] == "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"


def test_a_node_override_may_name_only_its_capacity_type() -> None:
    manifest = base_config()
    manifest["spec"]["nodeOverrides"] = [
        {"name": "spot", "nodeSelector": {"karpenter.sh/capacity-type": "spot"}, "capacityType": "Spot"},
        {"name": "reserved", "nodeSelector": {"pool": "reserved"}, "capacityType": "Reserved", "usdPerGpuHour": "2"},
    ]
    config = GPUPoolConfig.model_validate(manifest)
    assert [o.capacity_type for o in config.spec.node_overrides] == [CapacityType.SPOT, CapacityType.RESERVED]
