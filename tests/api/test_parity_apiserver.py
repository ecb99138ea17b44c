"""Property: the pydantic models and the real API server accept and reject exactly the same pools.

Every rule is written twice (CEL/OpenAPI for the server, validators for Python). Hypothesis draws
manifests whose fields mix valid and invalid values, so rules meet in combinations the hand-written
table does not cover, and each manifest goes to both judges.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from api_cases import NS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gpupool_operator.api import InferencePool

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


VALID_HARDWARE = [
    {"type": "MIG", "mig": {"profile": "1g.10gb"}},
    {"type": "MIG", "mig": {"profile": "3g.40gb"}, "inferencesPerSecond": "250.5"},
    {"type": "MIG", "mig": {"minMemory": "10Gi"}},
    {"type": "MIG", "mig": {"minMemory": "4Gi"}},
    {"type": "GPU", "gpu": {"product": "H100-80GB"}, "inferencesPerSecond": "0.5"},
    {"type": "GPU", "gpu": {"product": "NVIDIA-H100-80GB-HBM3"}},
    {"type": "CPU", "cpu": {"cores": 4, "memory": "16Gi"}},
    {"type": "CPU", "cpu": {"cores": 8}, "inferencesPerSecond": "40"},
]
INVALID_HARDWARE = [
    {"type": "MIG", "mig": {"profile": "2g.20gb", "minMemory": "20Gi"}},
    {"type": "MIG", "mig": {}},
    {"type": "GPU", "gpu": {"product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"}},
    {"type": "GPU", "cpu": {"cores": 2}},
    {"type": "CPU", "cpu": {"cores": 0}},
    {"type": "CPU", "cpu": {"cores": 8}, "inferencesPerSecond": "0"},
]
ABSENT = object()


def pick(valid: list[Any], invalid: list[Any]) -> st.SearchStrategy[Any]:
    """A valid value most of the time, an invalid one about one draw in twenty-five."""
    return st.integers(0, 24).flatmap(
        lambda n: st.sampled_from(invalid) if n == 0 and invalid else st.sampled_from(valid)
    )


@st.composite
def hardware(draw: st.DrawFn) -> list[dict[str, Any]]:
    options = draw(st.lists(st.sampled_from(range(len(VALID_HARDWARE))), min_size=1, max_size=3, unique=True))
    out = [VALID_HARDWARE[i] for i in options]
    mutation = draw(st.integers(0, 24))
    if mutation == 0:
        out.append(draw(st.sampled_from(INVALID_HARDWARE)))
    elif mutation == 1:
        out.append(out[0])  # a duplicate option
    elif mutation == 2:
        out = []
    return out


@st.composite
def models(draw: st.DrawFn, name: str) -> dict[str, Any]:
    model: dict[str, Any] = {
        "name": name,
        "source": draw(pick([{"uri": "hf://org/model"}, {"uri": "builtin://all-minilm-l6-v2", "format": "Builtin"},
                             {"uri": "s3://bucket/model.onnx", "format": "ONNX"}],
                            [{"uri": "builtin://all-minilm-l6-v2"}, {"uri": "ftp://host/model"}])),
        "acceleratorMemory": draw(pick(["2Gi", "2Gi", "0.5Gi", "1536Mi", "8Gi", "20Gi"], ["0", "8GB", "-1Gi"])),
        "hardware": draw(hardware()),
        "maxReplicas": draw(pick([1, 3, 1000], [0, 1001])),
    }
    optional = {
        "minReplicas": draw(pick([ABSENT, ABSENT, 1, 2, 0], [-1])),
        "gpusPerReplica": draw(pick([ABSENT, ABSENT, ABSENT, 1, 2, 8], [9, 0])),
        "engine": draw(pick([ABSENT, ABSENT, {"precision": "fp8"}, {"precision": "bf16", "maxBatchSize": 8},
                             {"maxQueueDelay": "10ms", "torchCompile": True}],
                            [{"precision": "int4"}, {"maxBatchSize": 0}, {"maxQueueDelay": "10"}])),
        "latencyObjective": draw(pick([ABSENT, {"target": "200ms"}, {"percentile": "P99", "target": "2s"}],
                                      [{"target": "2"}, {"percentile": "P42", "target": "1s"}])),
        "targetQueueDepth": draw(pick([ABSENT, 1, 16], [0])),
    }
    model.update({k: v for k, v in optional.items() if v is not ABSENT})
    return model


@st.composite
def pools(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(pick([["m0"], ["m0", "m1"]], [["m0", "m0"], ["Bad_Name"]]))
    spec: dict[str, Any] = {"models": [draw(models(n)) for n in names]}
    optional = {
        "scaling": draw(pick(
            [ABSENT, {"scaleToZero": True}, {"scaleToZero": True}, {"scaleToZero": False, "scaleToZeroAfter": "1h"}],
            [{"scaleDownStabilizationWindow": "1x"}],
        )),
        "budget": draw(pick([ABSENT, {"maxUsdPerHour": "10"}, {"maxUsdPerHour": "0.01"}], [{"maxUsdPerHour": "0.00"}])),
        "placementStrategy": draw(pick([ABSENT, "BinPack", "Spread"], ["Cheapest"])),
    }
    spec.update({k: v for k, v in optional.items() if v is not ABSENT})
    return {"apiVersion": "gpupool.io/v1alpha1", "kind": "InferencePool", "metadata": {"name": "parity"}, "spec": spec}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifest=pools())
def test_models_and_api_server_agree(crds: Any, manifest: dict[str, Any]) -> None:
    try:
        InferencePool.model_validate(manifest)
        python_ok, python_why = True, ""
    except ValidationError as exc:
        python_ok, python_why = False, str(exc)
    proc = crds.kubectl("apply", "--validate=strict", "--dry-run=server", "-n", NS, "-f", "-",
                        input=json.dumps(manifest), check=False)
    server_ok = proc.returncode == 0
    assert python_ok == server_ok, (
        f"python {'accepts' if python_ok else 'rejects'}, server {'accepts' if server_ok else 'rejects'}\n"
        f"{json.dumps(manifest)}\npython: {python_why}\nserver: {proc.stderr}"
    )
