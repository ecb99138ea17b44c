"""Builders for InferencePool / GPUPoolConfig manifests and the table of invalid ones.

The same table drives two tiers: the pydantic models must reject every case (test_api_models.py),
and the real API server must reject it with an error naming the field (test_crd_apiserver.py). A
case is a mutation of a valid manifest, so each one is invalid for exactly one reason.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "pools").glob("*.yaml"))
CRD_FILES = sorted((ROOT / "crds").glob("*.yaml"))

NS = "gpupool-api-tests"
CRD_NAMES = ("inferencepools.gpupool.io", "gpupoolconfigs.gpupool.io")

Manifest = dict[str, Any]


def wait_for(predicate: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def base_pool(name: str = "case") -> Manifest:
    """A valid pool whose one model may run on a MIG slice, a whole GPU or CPU cores."""
    return {
        "apiVersion": "gpupool.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": name},
        "spec": {
            "models": [
                {
                    "name": "m0",
                    "source": {"uri": "hf://org/model"},
                    "acceleratorMemory": "8Gi",
                    "hardware": [
                        {"type": "MIG", "mig": {"profile": "1g.10gb"}, "inferencesPerSecond": "100"},
                        {"type": "GPU", "gpu": {"product": "H100-80GB"}},
                        {"type": "CPU", "cpu": {"cores": 4}},
                    ],
                    "minReplicas": 1,
                    "maxReplicas": 3,
                }
            ]
        },
    }


def base_config() -> Manifest:
    """A valid cluster configuration."""
    return {
        "apiVersion": "gpupool.io/v1alpha1",
        "kind": "GPUPoolConfig",
        "metadata": {"name": "default"},
        "spec": {
            "gpuPrices": [{"product": "H100-80GB", "usdPerGpuHour": "6.88"}],
            "nodeOverrides": [
                {"name": "spot", "nodeSelector": {"karpenter.sh/capacity-type": "spot"}, "priceMultiplier": "0.35"}
            ],
            "mig": {"policy": "AllowList", "allowedLayouts": ["all-1g.10gb", "all-balanced"]},
        },
    }


@dataclass(frozen=True)
class Case:
    """One invalid manifest: ``mutate`` breaks a valid one; ``field`` is what the error must name."""

    id: str
    mutate: Callable[[Manifest], None]
    field: str
    python_field: str | None = None
    base: Callable[[], Manifest] = base_pool

    def manifest(self, name: str | None = None) -> Manifest:
        obj = copy.deepcopy(self.base())
        if name is not None and obj["kind"] == "InferencePool":
            obj["metadata"]["name"] = name
        self.mutate(obj)
        return obj

    @property
    def expected_python_field(self) -> str:
        return self.python_field or self.field


def _model(obj: Manifest) -> dict[str, Any]:
    model: dict[str, Any] = obj["spec"]["models"][0]
    return model


def _set(path: str, value: Any) -> Callable[[Manifest], None]:
    """A mutation setting a dotted path under models[0] ("engine.precision")."""

    def mutate(obj: Manifest) -> None:
        node = _model(obj)
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {}) if not key.isdigit() else node[int(key)]
        node[leaf] = value

    return mutate


def _do(fn: Callable[[Manifest], Any]) -> Callable[[Manifest], None]:
    def mutate(obj: Manifest) -> None:
        fn(obj)

    return mutate


M0 = "spec.models[0]"

POOL_CASES: tuple[Case, ...] = (
    Case("empty-model-list", _do(lambda o: o["spec"].update(models=[])), "spec.models"),
    Case(
        "duplicate-model-names",
        _do(lambda o: o["spec"]["models"].append(copy.deepcopy(o["spec"]["models"][0]))),
        "spec.models[1]",
        python_field="spec.models",
    ),
    Case(
        "too-many-models",
        _do(lambda o: o["spec"].update(models=[{**_model(o), "name": f"m{i}"} for i in range(33)])),
        "spec.models",
    ),
    Case("min-greater-than-max", _set("minReplicas", 5), f"{M0}.minReplicas"),
    Case("negative-min-replicas", _set("minReplicas", -1), f"{M0}.minReplicas"),
    Case("negative-memory", _set("acceleratorMemory", "-8Gi"), f"{M0}.acceleratorMemory"),
    Case("zero-memory", _set("acceleratorMemory", "0Gi"), f"{M0}.acceleratorMemory"),
    Case("missing-memory", _do(lambda o: _model(o).pop("acceleratorMemory")), f"{M0}.acceleratorMemory"),
    Case("unknown-precision", _set("engine.precision", "fp4"), f"{M0}.engine.precision"),
    Case("wrong-type-max-replicas", _set("maxReplicas", "three"), f"{M0}.maxReplicas"),
    Case("wrong-type-batch-size", _set("engine.maxBatchSize", [32]), f"{M0}.engine.maxBatchSize"),
    Case("unknown-field", _set("colour", "blue"), f"{M0}.colour"),
    Case("malformed-mig-profile", _set("hardware.0.mig.profile", "3g40gb"), f"{M0}.hardware[0].mig.profile"),
    Case(
        "mig-profile-and-min-memory",
        _set("hardware.0.mig.minMemory", "10Gi"),
        f"{M0}.hardware[0].mig",
    ),
    Case(
        "mig-min-memory-below-model-memory",
        _set("hardware.0.mig", {"minMemory": "4Gi"}),
        f"{M0}.hardware",
    ),
    Case("gpus-per-replica-over-node", _set("gpusPerReplica", 16), f"{M0}.gpusPerReplica"),
    Case("tensor-parallel-on-mig", _set("gpusPerReplica", 2), f"{M0}.gpusPerReplica"),
    Case("type-without-member", _do(lambda o: _model(o)["hardware"][0].pop("mig")), f"{M0}.hardware[0].mig"),
    Case("member-of-other-type", _set("hardware.1.cpu", {"cores": 2}), f"{M0}.hardware[1].cpu"),
    Case("unknown-hardware-type", _set("hardware.2.type", "TPU"), f"{M0}.hardware[2].type"),
    Case(
        "mig-product-as-whole-gpu",
        _set("hardware.1.gpu.product", "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"),
        f"{M0}.hardware[1].gpu.product",
    ),
    Case("lower-case-product", _set("hardware.1.gpu.product", "h100"), f"{M0}.hardware[1].gpu.product"),
    Case("zero-cpu-cores", _set("hardware.2.cpu.cores", 0), f"{M0}.hardware[2].cpu.cores"),
    Case("zero-throughput", _set("hardware.0.inferencesPerSecond", "0"), f"{M0}.hardware[0].inferencesPerSecond"),
    Case(
        "duplicate-hardware",
        _do(lambda o: _model(o)["hardware"].append(copy.deepcopy(_model(o)["hardware"][1]))),
        f"{M0}.hardware",
    ),
    Case("empty-hardware", _set("hardware", []), f"{M0}.hardware"),
    Case("fp8-on-cpu", _set("engine.precision", "fp8"), f"{M0}.engine.precision"),
    Case("bad-model-name", _set("name", "Llama_3"), f"{M0}.name"),
    Case("bad-duration", _set("engine.maxQueueDelay", "5 seconds"), f"{M0}.engine.maxQueueDelay"),
    Case("bad-latency-percentile", _set("latencyObjective", {"percentile": "P42", "target": "1s"}),
         f"{M0}.latencyObjective.percentile"),
    Case("unsupported-source-scheme", _set("source.uri", "ftp://example.com/model"), f"{M0}.source.uri"),
    Case("builtin-format-with-hf-uri", _set("source.format", "Builtin"), f"{M0}.source.uri"),
    Case("onnx-reranking", _do(lambda o: _model(o).update(source={"uri": "hf://org/model", "format": "ONNX"},
                                                          task="Reranking")), f"{M0}.task"),
    Case(
        "scale-to-zero-not-enabled",
        _set("minReplicas", 0),
        "spec.models",
    ),
    Case("unknown-strategy", _do(lambda o: o["spec"].update(placementStrategy="Cheapest")), "spec.placementStrategy"),
    Case("zero-budget", _do(lambda o: o["spec"].update(budget={"maxUsdPerHour": "0"})), "spec.budget.maxUsdPerHour"),
    Case("toleration-exists-with-value", _set("tolerations", [{"key": "a", "operator": "Exists", "value": "x"}]),
         f"{M0}.tolerations[0].value"),
    Case("toleration-empty-key-not-exists", _set("tolerations", [{"value": "x", "effect": "NoSchedule"}]),
         f"{M0}.tolerations[0].operator"),
    Case("toleration-seconds-without-no-execute",
         _set("tolerations", [{"key": "a", "effect": "NoSchedule", "tolerationSeconds": 5}]),
         f"{M0}.tolerations[0].tolerationSeconds"),
    Case("toleration-unknown-effect", _set("tolerations", [{"key": "a", "effect": "Never"}]),
         f"{M0}.tolerations[0].effect"),
    Case("toleration-bad-key", _set("tolerations", [{"key": "a b", "operator": "Exists"}]),
         f"{M0}.tolerations[0].key"),
    Case("allow-spot-not-boolean", _set("allowSpot", [True]), f"{M0}.allowSpot"),
    Case(
        "float-budget",
        _do(lambda o: o["spec"].update(budget={"maxUsdPerHour": 12.5})),
        "spec.budget.maxUsdPerHour",
    ),
)


def _cfg(fn: Callable[[Manifest], Any]) -> Callable[[Manifest], None]:
    return _do(fn)


CONFIG_CASES: tuple[Case, ...] = (
    Case("config-not-singleton", _cfg(lambda o: o["metadata"].update(name="prod")), "metadata.name",
         base=base_config),
    Case(
        "config-negative-price",
        _cfg(lambda o: o["spec"]["gpuPrices"][0].update(usdPerGpuHour="-1")),
        "spec.gpuPrices[0].usdPerGpuHour",
        base=base_config,
    ),
    Case(
        "config-duplicate-product",
        _cfg(lambda o: o["spec"]["gpuPrices"].append({"product": "H100-80GB", "usdPerGpuHour": "3.99"})),
        "spec.gpuPrices[1]",
        python_field="spec.gpuPrices",
        base=base_config,
    ),
    Case(
        "config-multiplier-and-absolute",
        _cfg(lambda o: o["spec"]["nodeOverrides"][0].update(usdPerGpuHour="2")),
        "spec.nodeOverrides[0].priceMultiplier",
        base=base_config,
    ),
    Case(
        "config-override-without-price",
        _cfg(lambda o: o["spec"]["nodeOverrides"][0].pop("priceMultiplier")),
        "spec.nodeOverrides[0].capacityType",
        base=base_config,
    ),
    Case(
        "config-empty-node-selector",
        _cfg(lambda o: o["spec"]["nodeOverrides"][0].update(nodeSelector={})),
        "spec.nodeOverrides[0].nodeSelector",
        base=base_config,
    ),
    Case(
        "config-allow-list-empty",
        _cfg(lambda o: o["spec"]["mig"].update(allowedLayouts=[])),
        "spec.mig.allowedLayouts",
        base=base_config,
    ),
    Case(
        "config-unknown-slice-pricing",
        _cfg(lambda o: o["spec"].update(migSlicePricing="Linear")),
        "spec.migSlicePricing",
        base=base_config,
    ),
)

ALL_CASES = POOL_CASES + CONFIG_CASES


def _variant(base: Callable[[], Manifest], fn: Callable[[Manifest], Any]) -> Callable[[], Manifest]:
    def make() -> Manifest:
        obj = base()
        fn(obj)
        return obj

    return make


VALID_VARIANTS: dict[str, Callable[[], Manifest]] = {
    "pool": base_pool,
    "config": base_config,
    "scale-to-zero": _variant(
        base_pool, lambda o: (_model(o).update(minReplicas=0), o["spec"].update(scaling={"scaleToZero": True}))
    ),
    "gfd-product-value": _variant(base_pool, lambda o: _model(o)["hardware"][1]["gpu"].update(product="Tesla-T4")),
    "mig-gfx-profile": _variant(base_pool, lambda o: _model(o)["hardware"][0]["mig"].update(profile="1g.23gb+gfx")),
    "tolerations-and-spot": _variant(base_pool, lambda o: _model(o).update(allowSpot=True, tolerations=[
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
        {"operator": "Exists"}])),
    "onnx-sentence-encoder": _variant(base_pool, lambda o: _model(o).update(
        source={"uri": "hf://BAAI/bge-small-en-v1.5", "format": "ONNX"}, task="SentenceEmbedding")),
    "mig-any-slice": _variant(base_pool, lambda o: _model(o)["hardware"][0].update(mig={"minMemory": "8Gi"})),
    "tensor-parallel-gpu": _variant(
        base_pool,
        lambda o: _model(o).update(gpusPerReplica=8, hardware=[{"type": "GPU", "gpu": {"product": "B200-180GB"}}]),
    ),
    "everything-set": _variant(
        base_pool,
        lambda o: (
            _model(o).update(
                engine={"precision": "bf16", "tritonKernels": False, "torchCompile": True, "maxBatchSize": 4096,
                        "maxQueueDelay": "1m30s"},
                latencyObjective={"percentile": "P99", "target": "250ms"},
                targetQueueDepth=10000,
                source={"uri": "pvc://models/bert", "format": "TorchScript", "revision": "v1.2",
                        "credentialsSecretName": "pvc-creds"},
            ),
            o["spec"].update(placementStrategy="Spread", budget={"maxUsdPerHour": "0.5"},
                             scaling={"scaleUpStabilizationWindow": "0s", "scaleDownStabilizationWindow": "10m",
                                      "scaleToZero": False, "scaleToZeroAfter": "1h"}),
        ),
    ),
    "config-tier-only-override": _variant(
        base_config,
        lambda o: (o["spec"]["nodeOverrides"][0].pop("priceMultiplier"), o["spec"]["nodeOverrides"][0].update(
            capacityType="Spot")),
    ),
    "config-minimal": lambda: {"apiVersion": "gpupool.io/v1alpha1", "kind": "GPUPoolConfig",
                               "metadata": {"name": "default"}},
}
