"""Readable test objects, Kueue style: ``PoolBuilder("p").mig("m", "1g.10gb", replicas=2).obj()``."""

from __future__ import annotations

import copy
from typing import Any

from gpupool_operator.local.nodes import build_node
from gpupool_operator.local.spec import ClusterSpec


class PoolBuilder:
    def __init__(self, name: str, namespace: str | None = None) -> None:
        self.body: dict[str, Any] = {
            "apiVersion": "gpupool.io/v1alpha1",
            "kind": "InferencePool",
            "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
            "spec": {"models": []},
        }

    def _model(self, name: str, hardware: list[dict[str, Any]], replicas: int, memory: str,
               gpus_per_replica: int = 1) -> PoolBuilder:
        model: dict[str, Any] = {
            "name": name,
            "source": {"uri": f"hf://example/{name}", "format": "SafeTensors"},
            "acceleratorMemory": memory,
            "hardware": hardware,
            "minReplicas": replicas,
            "maxReplicas": max(replicas, 1) + 10,
        }
        if gpus_per_replica > 1:
            model["gpusPerReplica"] = gpus_per_replica
        self.body["spec"]["models"].append(model)
        return self

    def cpu(self, name: str, cores: int = 1, replicas: int = 1) -> PoolBuilder:
        return self._model(name, [{"type": "CPU", "cpu": {"cores": cores}}], replicas, "1Gi")

    def mig(self, name: str, profile: str, replicas: int = 1, memory: str = "4Gi") -> PoolBuilder:
        return self._model(name, [{"type": "MIG", "mig": {"profile": profile}}], replicas, memory)

    def gpu(self, name: str, product: str, replicas: int = 1, memory: str = "20Gi", gpus: int = 1) -> PoolBuilder:
        return self._model(name, [{"type": "GPU", "gpu": {"product": product}}], replicas, memory, gpus)

    def obj(self) -> dict[str, Any]:
        return copy.deepcopy(self.body)


def fake_gpu_node(name: str, gpu: str, gpus: int = 8, mig_strategy: str | None = None,
                  layouts: list[dict[str, int]] | None = None) -> dict[str, Any]:
    """A KWOK GPU node with real GFD labels (built by the local cluster's own node generator)."""
    pool: dict[str, Any] = {
        "name": name.rsplit("-", 1)[0], "count": 1, "gpu": gpu, "gpusPerNode": gpus, "cpu": 64, "memoryGiB": 512,
        "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
    }
    if mig_strategy:
        pool["mig"] = {"strategy": mig_strategy, "gpus": layouts or [{} for _ in range(gpus)]}
    spec = ClusterSpec.model_validate({"name": "tests", "pools": [pool]})
    node = build_node(spec, spec.pools[0], int(name.rsplit("-", 1)[1]))
    assert node["metadata"]["name"] == name, node["metadata"]["name"]
    return node
