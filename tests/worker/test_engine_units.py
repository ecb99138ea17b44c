"""Pure engine pieces: datatypes and the BYTES codec, cost arithmetic, settings, validation, and
the data plane driven in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpupool_worker.config import SettingsError, WorkerSettings
from gpupool_worker.engine.costing import CostModel
from gpupool_worker.engine.dataplane import DataPlane
from gpupool_worker.engine.datatypes import (
    DataType,
    decode_bytes_elements,
    encode_bytes_elements,
    from_numpy_dtype,
)
from gpupool_worker.engine.errors import ErrorKind, InferenceError
from gpupool_worker.engine.metrics import WorkerMetrics
from gpupool_worker.engine.repository import ModelRepository
from gpupool_worker.engine.types import InferRequest, Tensor
from gpupool_worker.engine.validation import validate

from .gate_model import GateModel

ROOT = Path(__file__).resolve().parents[2]


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_bytes_codec_round_trips(elements: list[bytes]) -> None:
    raw = encode_bytes_elements(np.array(elements, dtype=object))
    assert list(decode_bytes_elements(raw, count=len(elements), tensor="t")) == elements


@given(st.lists(st.binary(max_size=16), min_size=1, max_size=8), st.integers(min_value=1, max_value=7))
def test_truncated_bytes_payloads_are_refused_never_misread(elements: list[bytes], cut: int) -> None:
    raw = encode_bytes_elements(np.array(elements, dtype=object))
    with pytest.raises(InferenceError) as err:
        decode_bytes_elements(raw[: max(0, len(raw) - cut)], count=len(elements), tensor="t")
    assert err.value.kind is ErrorKind.INVALID_ARGUMENT
    assert "tensor 't'" in err.value.message


def test_datatypes_map_to_numpy_and_back() -> None:
    for dt in DataType:
        assert from_numpy_dtype(dt.numpy_dtype) is dt
    assert DataType.FP16.itemsize == 2
    assert DataType.BYTES.itemsize == 0
    with pytest.raises(InferenceError, match="unknown datatype 'FP8'"):
        DataType.parse("FP8", tensor="x")


def test_cost_is_price_times_share_times_busy_time() -> None:
    cost = CostModel(price_per_hour_usd=6.88, device_share=3 / 7)
    one_hour = 3_600 * 10**9
    assert cost.cost_of(one_hour) == pytest.approx(6.88 * 3 / 7)
    assert cost.split(1_000_000, rows=3, batch_rows=4) == pytest.approx(cost.cost_of(1_000_000) * 0.75)
    # a batch of 32 at the same busy time makes each inference 32x cheaper than batch 1
    assert cost.split(10**7, 1, 32) * 32 == pytest.approx(cost.split(10**7, 1, 1))
    assert cost.per_million(1000.0) == pytest.approx(6.88 * 3 / 7 / 3600 * 1000)
    with pytest.raises(ValueError, match="device share"):
        CostModel(device_share=0)
    with pytest.raises(ValueError, match="price per hour"):
        CostModel(price_per_hour_usd=-1)


def test_settings_come_from_the_operators_environment() -> None:
    s = WorkerSettings.from_env({
        "GPUPOOL_PRICE_PER_HOUR": "3.43", "GPUPOOL_DEVICE_SHARE": "0.5",
        "GPUPOOL_ACCELERATOR": "NVIDIA-A100-SXM4-80GB", "GPUPOOL_MIG_PROFILE": "3g.40gb",
        "GPUPOOL_MODEL_REPOSITORY": "/models", "GPUPOOL_BUILTIN_MODELS": "minilm",
        "GPUPOOL_GRPC_PORT": "9001", "GPUPOOL_ENGINE": "triton",
    })
    assert (s.price_per_hour, s.device_share, s.mig_profile) == (3.43, 0.5, "3g.40gb")
    assert s.model_repository == Path("/models")
    assert s.builtin_models == ("minilm",)
    assert s.override(grpc_port=0, engine=None).grpc_port == 0
    assert s.override(engine=None).engine == "triton"
    with pytest.raises(SettingsError, match="GPUPOOL_GRPC_PORT must be a port number"):
        WorkerSettings.from_env({"GPUPOOL_GRPC_PORT": "70000"})


def test_the_preempt_token_budget_reaches_the_batch_policy() -> None:
    from gpupool_worker.engine.models.model_json import ModelConfig

    assert WorkerSettings.from_env({}).preempt_token_budget == 0  # one row of the model's longest
    settings = WorkerSettings.from_env({"GPUPOOL_PREEMPT_TOKEN_BUDGET": "512", "GPUPOOL_BUILTIN_MODELS": "minilm",
                                        "GPUPOOL_DEVICE": "cpu"})
    assert settings.preempt_token_budget == 512
    with pytest.raises(SettingsError, match="GPUPOOL_PREEMPT_TOKEN_BUDGET must be >= 0"):
        WorkerSettings.from_env({"GPUPOOL_PREEMPT_TOKEN_BUDGET": "-1"})
    with pytest.raises(SettingsError, match="GPUPOOL_PREEMPT_TOKEN_BUDGET='a lot' is not a number"):
        WorkerSettings.from_env({"GPUPOOL_PREEMPT_TOKEN_BUDGET": "a lot"})
    # model.json carries its own, and the built-in model gets the worker's setting (in a process of
    # its own: the server's protobuf package shares names with tritonclient's, which other tests load)
    assert ModelConfig(kind="onnx", preempt_token_budget=256).policy.preempt_token_budget == 256
    code = ("import os; from gpupool_worker.config import WorkerSettings; from gpupool_worker.server.app import "
            "build_plane; plane = build_plane(WorkerSettings.from_env()); entry = plane.repository.get('minilm'); "
            "print(entry.config.policy.preempt_token_budget); plane.compute.shutdown()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("operator", "worker", "proto")),
           "GPUPOOL_PREEMPT_TOKEN_BUDGET": "512", "GPUPOOL_BUILTIN_MODELS": "minilm", "GPUPOOL_DEVICE": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "512"


def test_cuda_graphs_setting_is_a_boolean_on_by_default() -> None:
    assert WorkerSettings.from_env({}).cuda_graphs is True
    assert WorkerSettings.from_env({"GPUPOOL_CUDA_GRAPHS": "false"}).cuda_graphs is False
    assert WorkerSettings.from_env({"GPUPOOL_CUDA_GRAPHS": "On"}).cuda_graphs is True
    with pytest.raises(SettingsError, match="GPUPOOL_CUDA_GRAPHS='maybe' is not a boolean"):
        WorkerSettings.from_env({"GPUPOOL_CUDA_GRAPHS": "maybe"})


def _request(*tensors: Tensor, outputs: tuple[str, ...] = ()) -> InferRequest:
    return InferRequest("gate", tensors, requested_outputs=outputs)


def _x(shape: tuple[int, ...], dt: DataType = DataType.FP32, name: str = "x") -> Tensor:
    return Tensor(name, dt, shape, np.zeros(shape, dtype=dt.numpy_dtype))


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (_request(_x((2, 3)), _x((2, 3))), "input 'x' appears more than once"),
        (_request(_x((2, 3)), _x((2, 3), name="z")), "unexpected input 'z'"),
        (_request(_x((2, 3), DataType.INT32)), "input 'x' has datatype INT32, model 'gate' expects FP32"),
        (_request(_x((2, 3, 1))), "input 'x' has shape [2, 3, 1], model 'gate' expects [-1, 3]"),
        (_request(_x((0, 3))), "batch of 0 rows"),
        (_request(_x((9, 3))), "batch of 9 rows exceeds max_batch_size 8"),
        (_request(), "missing input 'x'"),
        (_request(_x((1, 3)), outputs=("nope",)), "requested output 'nope' is not an output"),
    ],
)
def test_validation_names_what_is_wrong(request_: InferRequest, fragment: str) -> None:
    with pytest.raises(InferenceError) as err:
        validate(request_, GateModel(width=3).metadata)
    assert err.value.kind is ErrorKind.INVALID_ARGUMENT
    assert fragment in err.value.message


async def test_data_plane_answers_with_cost_and_counts_inflight() -> None:
    cost = CostModel(price_per_hour_usd=10.0, device_share=0.25, accelerator="cpu")
    repo = ModelRepository(None)
    repo.add("gate", GateModel(width=3))
    plane = DataPlane(repo, cost, WorkerMetrics(cost))
    assert not plane.ready
    await plane.load()
    assert plane.ready
    assert plane.model_ready("gate")
    assert plane.model_ready("gate", "1")
    assert not plane.model_ready("gate", "2")
    response = await plane.infer(InferRequest(
        "gate", (Tensor("x", DataType.FP32, (2, 3), np.ones((2, 3), np.float32)),), id="r1"))
    assert response.id == "r1"
    np.testing.assert_array_equal(response.outputs[0].data, np.full((2, 3), 2.0, np.float32))
    busy = response.parameters["busy_ns"]
    assert isinstance(busy, int)
    assert busy > 0
    assert response.parameters["cost_usd"] == pytest.approx(cost.cost_of(busy))
    (snap,) = plane.statistics("gate")
    assert snap.cost_total_usd == pytest.approx(response.parameters["cost_usd"])
    assert plane.inflight("gate") == 0
    assert plane.queue_depth("gate") == 0
    with pytest.raises(InferenceError) as err:
        await plane.infer(InferRequest("other", ()))
    assert err.value.kind is ErrorKind.NOT_FOUND
    await plane.drain()
    assert not plane.ready
    with pytest.raises(InferenceError) as err:
        await plane.infer(InferRequest("gate", ()))
    assert err.value.kind is ErrorKind.UNAVAILABLE


def test_cost_ledger_charges_idle_time_and_slides_its_window() -> None:
    from gpupool_worker.engine.costing import CostLedger, CostModel

    cost = CostModel(price_per_hour_usd=3.6, device_share=0.5)  # 0.0005 USD per replica-second
    ledger = CostLedger(cost, started_s=100.0, window_s=60.0)
    ledger.record("a", rows=10, busy_ns=2_000_000_000, at_s=110.0)  # 2 s busy
    ledger.record("b", rows=5, busy_ns=2_000_000_000, at_s=120.0)
    f = ledger.figures("a", now_s=140.0)  # up 40 s, all inside the window
    assert f.busy_lifetime == pytest.approx(2 * 0.0005 / 10)
    assert f.busy_window == pytest.approx(f.busy_lifetime)
    # 40 s x 0.0005 USD, half to "a" (half the busy time), over its 10 inferences
    assert f.idle_charged_lifetime == pytest.approx(40 * 0.0005 / 2 / 10)
    assert f.idle_charged_window == pytest.approx(f.idle_charged_lifetime)
    assert (f.replica_s, f.window_inferences) == (40.0, 10)
    # 100 s later "a"'s batch has left the window: nothing in it, the lifetime figure keeps growing
    later = ledger.figures("a", now_s=240.0)
    assert (later.busy_window, later.idle_charged_window, later.window_inferences) == (0.0, 0.0, 0)
    assert later.idle_charged_lifetime == pytest.approx(140 * 0.0005 / 2 / 10)
    ledger.record("a", rows=4, busy_ns=1_000_000_000, at_s=239.0)
    now = ledger.figures("a", now_s=240.0)
    assert now.busy_window == pytest.approx(1 * 0.0005 / 4)
    assert now.idle_charged_window == pytest.approx(60 * 0.0005 / 4)  # the lone model in the window
    assert ledger.figures("nobody", now_s=240.0).idle_charged_lifetime == 0.0


def test_rate_limited_log_counts_what_it_holds_back(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from gpupool_worker.engine.logs import RateLimitedLog

    now = [0.0]
    errors = RateLimitedLog(logging.getLogger("test.ratelimit"), interval_s=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        assert errors.warning("bad", "bad request %d", 1)
        for i in range(5):
            assert not errors.warning("bad", "bad request %d", i + 2)
        assert errors.warning("other", "another kind")
        now[0] = 61.0
        assert errors.warning("bad", "bad request %d", 7)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["bad request 1", "another kind",
                     "bad request 7 (5 more like this in the last 60 s not logged)"]
    assert errors.total == {"bad": 7, "other": 1}
