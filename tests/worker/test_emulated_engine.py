"""The emulated accelerator: a worker handed an emulated MIG slice by the device plugin's variables
serves the real model's shapes after the shape's batch time, and says it is emulated."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

import numpy as np
import pytest

from gpupool_worker.engine.emulated import DEFAULT_GPU_THROUGHPUT, EmulatedDevice

from .conftest import WorkerProcess

EMULATED_ENV = {
    # what the emulated NVIDIA device plugin's Allocate gives the container
    "GPUPOOL_EMULATED": "1",
    "GPUPOOL_EMULATED_PRODUCT": "A100-80GB",
    "GPUPOOL_EMULATED_MIG_PROFILE": "3g.40gb",
    "NVIDIA_VISIBLE_DEVICES": "MIG-emulated-n1-0-3g.40gb-4",
    # what the operator gives every replica
    "GPUPOOL_BUILTIN_MODELS": "minilm",
    "GPUPOOL_MAX_BATCH_SIZE": "8",
    "GPUPOOL_INFERENCES_PER_SECOND": "40",
    "GPUPOOL_PRICE_PER_HOUR": "3.43",
    "GPUPOOL_DEVICE_SHARE": "0.5",
    "GPUPOOL_ACCELERATOR": "NVIDIA-A100-SXM4-80GB",
    "GPUPOOL_MIG_PROFILE": "3g.40gb",
    "GPUPOOL_PRECISION": "fp16",  # a GPU precision: the emulated engine must not try it on the CPU
}


def test_batch_time_follows_the_placement_model_and_the_default_rule() -> None:
    d = EmulatedDevice.from_env(EMULATED_ENV)
    assert d is not None
    assert d.declared
    assert d.batch_seconds(8, 8) == pytest.approx(8 / 40)  # a full batch: B / T
    assert d.batch_seconds(1, 8) == pytest.approx(8 / 40 * (0.5 + 0.5 / 8))  # fixed share plus its row
    undeclared = EmulatedDevice.from_env({**EMULATED_ENV, "GPUPOOL_INFERENCES_PER_SECOND": ""})
    assert undeclared is not None
    assert not undeclared.declared
    assert undeclared.throughput == pytest.approx(DEFAULT_GPU_THROUGHPUT * 3 / 7)
    assert EmulatedDevice.from_env({}) is None  # real hardware: nothing emulated


def test_an_emulated_slice_serves_the_real_models_shapes_at_the_profiles_speed(
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    import tritonclient.grpc as triton

    w = worker_factory(None, env=EMULATED_ENV)
    client = triton.InferenceServerClient(w.url)
    try:
        text = triton.InferInput("text", [2], "BYTES")
        text.set_data_from_numpy(np.array([b"GPU slices", b"cut inference cost"], dtype=object))
        started = time.perf_counter()
        result = client.infer("minilm", [text])
        took = time.perf_counter() - started
        emb = result.as_numpy("embedding")
        assert emb.shape == (2, 384)  # the real model's output shape
        assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)
        assert took >= 8 / 40 * (0.5 + 0.5 * 2 / 8) - 0.005  # at least the shape's batch time
        cost = result.get_response().parameters["cost_usd"].double_param
        assert cost > 0  # cost is the worker's real accounting
        with urllib.request.urlopen(f"http://127.0.0.1:{w.metrics_port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'gpupool_engine_emulated{shape="A100-80GB MIG 3g.40gb",throughput="40"} 1.0' in metrics
        assert "EMULATED A100-80GB MIG 3g.40gb" in w.log()
    finally:
        client.close()
