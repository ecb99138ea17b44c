"""Every model format and task the worker serves, loaded the way a pool's model is (a source,
resolved from its files and the pool's format and task), checked against the reference library
for that family: sentence-transformers, transformers, ONNX Runtime, torch. Metadata is the actual
model's. Precisions are applied or refused with the reason; mismatches are refused by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from support import tiny_models

from gpupool_worker.engine.datatypes import DataType
from gpupool_worker.engine.models.pool_model import TASKS, PoolModel
from gpupool_worker.engine.repository import (
    ModelEntry,
    ModelRepository,
    ModelState,
    RepositoryCollector,
    RuntimeDefaults,
)
from gpupool_worker.sources import Reason, SourceError

CPU = torch.device("cpu")
SENTENCES = ["the quick brown fox jumps over the lazy dog", "gpu slices cut the cost of inference", "hello"]


def serve(tmp_path: Path, folder: Path, *, fmt: str = "SafeTensors", task: str = "Auto", precision: str = "auto",
          engine: str = "auto", tensors: dict[str, Any] | None = None, path: str = "",
          device_memory: int | None = None) -> ModelEntry:
    """Serve ``folder`` as a pool would: a pvc:// source, the pool's format and task."""
    pvc_root = folder.parent.parent
    uri = f"pvc://{folder.parent.name}/{folder.name}{'/' + path if path else ''}"
    model = PoolModel(name="m", uri=uri, model_format=fmt, task=TASKS[task], tensors=tensors or {},
                      cache_root=tmp_path / "cache", pvc_root=pvc_root, device_memory=device_memory)
    repo = ModelRepository(None, RuntimeDefaults(device=CPU, engine=engine, precision=precision))
    repo.add_source(model, {"max_batch_size": 8, "max_queue_delay_us": 1000})
    repo.load_all()
    entry = repo.get("m")
    assert entry is not None
    return entry


def ready(entry: ModelEntry) -> Any:
    assert entry.state is ModelState.READY, entry.reason
    assert entry.model is not None
    return entry.model


def refused(entry: ModelEntry, reason: Reason, *words: str) -> None:
    assert entry.state is ModelState.UNAVAILABLE
    assert entry.failure is reason, entry.reason
    for w in words:
        assert w in entry.reason, entry.reason


def io(model: Any) -> tuple[list[tuple[str, str, list[int]]], list[tuple[str, str, list[int]]]]:
    m = model.metadata
    return ([(s.name, s.datatype.value, list(s.shape)) for s in m.inputs],
            [(s.name, s.datatype.value, list(s.shape)) for s in m.outputs])


def texts(items: list[str]) -> np.ndarray:
    return np.array([t.encode() for t in items], dtype=object)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One claim holding every tiny model (written once per module)."""
    claim = tmp_path_factory.mktemp("pvc") / "models"
    tiny_models.write_sentence_bert(claim / "bge-like", pooling="cls", normalize=True)
    tiny_models.write_sentence_bert(claim / "minilm-like", pooling="mean", normalize=True)
    # a Hub sentence-transformers repository with its ONNX export (bge-small-en-v1.5's layout)
    tiny_models.write_sentence_bert(claim / "bge-onnx", pooling="cls", normalize=True, seed=5)
    tiny_models.export_token_states(claim / "bge-onnx")
    tiny_models.write_bert_classifier(claim / "sentiment")
    tiny_models.write_xlmr_cross_encoder(claim / "reranker")
    tiny_models.write_onnx_classifier(claim / "resnet-like")
    tiny_models.write_onnx_tensors(claim / "affine" / "model.onnx")
    tiny_models.write_yolo_torchscript(claim / "yolo-like")
    from gpupool_worker.engine.models.examples import write_mlp

    write_mlp(claim / "mlp")
    (claim / "mlp" / "model.json").unlink()  # the program's own signature is the metadata
    return claim


# -- Hugging Face folders ---------------------------------------------------------------------

def test_sentence_embedding_pools_as_the_config_says(tmp_path: Path, models: Path) -> None:
    from sentence_transformers import SentenceTransformer

    entry = serve(tmp_path, models / "bge-like", task="SentenceEmbedding")
    model = ready(entry)
    assert entry.config is not None
    assert entry.config.kind == "transformers"  # CLS pooling: not the BERT fast path
    assert io(model) == ([("text", "BYTES", [-1])], [("embedding", "FP32", [-1, 32])])
    assert model.describe()["pooling"] == "cls, normalized"
    ours = model.execute({"text": texts(SENTENCES)}).outputs["embedding"]
    theirs = SentenceTransformer(str(models / "bge-like"), device="cpu").encode(SENTENCES)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_mean_pooled_bert_runs_on_gpupools_encoder(tmp_path: Path, models: Path) -> None:
    from sentence_transformers import SentenceTransformer

    entry = serve(tmp_path, models / "minilm-like")  # task Auto: modules.json says embedding
    model = ready(entry)
    assert entry.config is not None
    assert entry.config.kind == "sentence-embedding"
    ours = model.execute({"text": texts(SENTENCES)}).outputs["embedding"]
    theirs = SentenceTransformer(str(models / "minilm-like"), device="cpu").encode(SENTENCES)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_sequence_classification(tmp_path: Path, models: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = ready(serve(tmp_path, models / "sentiment"))  # Auto: a two-label classifier head
    assert io(model) == ([("text", "BYTES", [-1])], [("logits", "FP32", [-1, 2]), ("probabilities", "FP32", [-1, 2]),
                                                    ("label", "BYTES", [-1])])
    out = model.execute({"text": texts(SENTENCES)}).outputs
    ref = AutoModelForSequenceClassification.from_pretrained(str(models / "sentiment")).eval()
    tok = AutoTokenizer.from_pretrained(str(models / "sentiment"))
    with torch.no_grad():
        want = ref(**tok(SENTENCES, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(out["logits"], want, atol=1e-5)
    assert [x.decode() for x in out["label"]] == [["negative", "positive"][i] for i in want.argmax(1)]
    np.testing.assert_allclose(out["probabilities"].sum(1), 1.0, atol=1e-6)


def test_cross_encoder_reranking(tmp_path: Path, models: Path) -> None:
    from sentence_transformers import CrossEncoder

    model = ready(serve(tmp_path, models / "reranker", task="Reranking"))
    assert io(model) == ([("query", "BYTES", [-1]), ("document", "BYTES", [-1])],
                         [("score", "FP32", [-1]), ("logit", "FP32", [-1])])
    query = "what makes inference cheap"
    docs = ["gpu slices cut the cost of inference", "the lazy dog", "a quick brown fox"]
    out = model.execute({"query": texts([query] * 3), "document": texts(docs)}).outputs
    theirs = CrossEncoder(str(models / "reranker"), device="cpu").predict([(query, d) for d in docs])
    np.testing.assert_allclose(out["score"], theirs, atol=1e-5)
    np.testing.assert_allclose(out["score"], 1 / (1 + np.exp(-out["logit"])), atol=1e-6)


def test_transformers_precisions(tmp_path: Path, models: Path) -> None:
    full = ready(serve(tmp_path, models / "bge-like")).execute({"text": texts(SENTENCES)}).outputs["embedding"]
    for precision, min_cos in (("bf16", 0.98), ("int8", 0.98)):
        model = ready(serve(tmp_path, models / "bge-like", precision=precision))
        assert model.describe()["precision"] == precision
        got = model.execute({"text": texts(SENTENCES)}).outputs["embedding"]
        assert (got * full).sum(1).min() >= min_cos, precision
    refused(serve(tmp_path, models / "bge-like", precision="fp16"), Reason.PRECISION_UNSUPPORTED,
            "fp16", "transformers", "available there: fp32, bf16, int8")
    refused(serve(tmp_path, models / "bge-like", precision="fp8"), Reason.PRECISION_UNSUPPORTED, "fp8")
    refused(serve(tmp_path, models / "bge-like", engine="triton"), Reason.ENGINE_UNSUPPORTED, "engine triton")


# -- ONNX -------------------------------------------------------------------------------------

def test_onnx_image_classification_with_its_contract(tmp_path: Path, models: Path) -> None:
    import onnxruntime as ort

    model = ready(serve(tmp_path, models / "resnet-like", fmt="ONNX"))  # Auto: preprocessor_config.json is there
    assert io(model) == ([("image", "UINT8", [-1, -1, -1, 3])],
                         [("logits", "FP32", [-1, 10]), ("probabilities", "FP32", [-1, 10]), ("label", "BYTES", [-1])])
    images = np.random.default_rng(0).integers(0, 256, (2, 300, 400, 3), dtype=np.uint8)
    out = model.execute({"image": images}).outputs
    # the contract by hand: shortest edge 256 (bilinear, antialiased), center crop 224, /255, ImageNet mean/std
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(256, 341), mode="bilinear", antialias=True, align_corners=False)
    x = x[:, :, 16:240, 58:282] / 255.0
    x = (x - torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]) / torch.tensor([0.229, 0.224, 0.225])[
        None, :, None, None]
    want = ort.InferenceSession(str(models / "resnet-like" / "model.onnx")).run(None, {"pixel_values": x.numpy()})[0]
    np.testing.assert_allclose(out["logits"], want, atol=1e-4)
    assert [x.decode() for x in out["label"]] == [f"class_{i}" for i in want.argmax(1)]


def test_onnx_tensors_are_the_graphs_own(tmp_path: Path, models: Path) -> None:
    model = ready(serve(tmp_path, models / "affine", fmt="ONNX"))
    assert io(model) == ([("features", "FP32", [-1, 4])], [("scores", "FP32", [-1, 3])])
    assert model.metadata.max_batch_size == 8
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(model.execute({"features": x}).outputs["scores"],
                               x @ np.arange(12, dtype=np.float32).reshape(4, 3) + 1, atol=1e-5)


def test_onnx_precisions(tmp_path: Path, models: Path) -> None:
    images = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    full = ready(serve(tmp_path, models / "resnet-like", fmt="ONNX")).execute({"image": images}).outputs["logits"]
    q = ready(serve(tmp_path, models / "resnet-like", fmt="ONNX", precision="int8"))
    assert q.describe()["precision"] == "int8"
    got = q.execute({"image": images}).outputs["logits"]
    assert np.corrcoef(got.ravel(), full.ravel())[0, 1] > 0.99
    refused(serve(tmp_path, models / "resnet-like", fmt="ONNX", precision="fp16"), Reason.PRECISION_UNSUPPORTED,
            "onnxruntime engine on CPU", "fp32, int8")
    refused(serve(tmp_path, models / "resnet-like", fmt="ONNX", precision="bf16"), Reason.PRECISION_UNSUPPORTED)


def test_onnx_sentence_encoder_pools_as_its_config_says(tmp_path: Path, models: Path) -> None:
    from sentence_transformers import SentenceTransformer

    entry = serve(tmp_path, models / "bge-onnx", fmt="ONNX", task="SentenceEmbedding")
    model = ready(entry)
    assert entry.config is not None
    assert (entry.config.kind, entry.config.engine) == ("sentence-embedding", "onnx")
    assert io(model) == ([("text", "BYTES", [-1])], [("embedding", "FP32", [-1, 32])])
    assert model.describe()["engine"] == "onnx"
    assert model.describe()["pooling"] == "cls"
    ours = model.execute({"text": texts(SENTENCES)}).outputs["embedding"]
    theirs = SentenceTransformer(str(models / "bge-onnx"), device="cpu").encode(SENTENCES)  # from the safetensors
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    # Auto: a sentence-transformers folder with its tokenizer embeds
    auto = serve(tmp_path, models / "bge-onnx", fmt="ONNX")
    assert auto.config is not None
    assert auto.config.kind == "sentence-embedding"
    np.testing.assert_allclose(ready(auto).execute({"text": texts(SENTENCES)}).outputs["embedding"], ours, atol=1e-6)


def test_onnx_sentence_encoder_through_io_binding_answers_the_same(models: Path) -> None:
    # the binding calls the CUDA path makes, with the output bound in host memory
    from gpupool_worker.engine.models.ort_encoder import OrtSentenceModel
    from gpupool_worker.engine.precision import Precision

    def build(bound: bool) -> OrtSentenceModel:
        return OrtSentenceModel("m", "1", models / "bge-onnx", precision=Precision.FP32, max_batch_size=8,
                                threads=1, io_binding=bound)

    plain, bound = build(False), build(True)
    assert bound.describe()["io_binding"] == "cpu"
    for rows in (SENTENCES, SENTENCES[:1]):  # the output's shape follows the batch
        np.testing.assert_allclose(bound.execute({"text": texts(rows)}).outputs["embedding"],
                                   plain.execute({"text": texts(rows)}).outputs["embedding"], atol=1e-6)


def test_onnx_sentence_encoder_on_a_gpu_says_what_it_needs(models: Path) -> None:
    import onnxruntime as ort

    from gpupool_worker.engine.device import Device
    from gpupool_worker.engine.models.ort_encoder import CUDA_PROVIDER, OrtSentenceModel
    from gpupool_worker.engine.precision import Precision, resolve

    with pytest.raises(SourceError) as err:
        OrtSentenceModel("m", "1", models / "bge-onnx", precision=Precision.FP16, max_batch_size=8,
                         device=Device("cuda", 0))
    assert err.value.reason is Reason.PRECISION_UNSUPPORTED
    assert "runs the graph as exported, fp32, not fp16" in err.value.message
    assert resolve("onnx", "auto", device_type="cuda", capability=(9, 0), triton_ok=True, triton_reason="",
                   onnx_ok=True).precision.value == "fp32"
    with pytest.raises(ValueError, match="needs ONNX Runtime's CUDAExecutionProvider"):
        resolve("onnx", "auto", device_type="cuda", capability=(9, 0), triton_ok=True, triton_reason="",
                onnx_ok=False)
    if CUDA_PROVIDER in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider: the refusal without it cannot be shown here")
    with pytest.raises(SourceError) as err:
        OrtSentenceModel("m", "1", models / "bge-onnx", precision=Precision.FP32, max_batch_size=8,
                         device=Device("cuda", 0))
    assert err.value.reason is Reason.ENGINE_UNSUPPORTED
    assert "install onnxruntime-gpu" in err.value.message


# -- tensor programs --------------------------------------------------------------------------

YOLO = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 640, 640]}],
        "outputs": [{"name": "output0", "datatype": "FP32", "shape": [-1, 84, 8400]}]}


def test_torchscript_with_declared_tensors(tmp_path: Path, models: Path) -> None:
    model = ready(serve(tmp_path, models / "yolo-like", fmt="TorchScript", tensors=YOLO))
    assert io(model) == ([("images", "FP32", [-1, 3, 640, 640])], [("output0", "FP32", [-1, 84, 8400])])
    out = model.execute({"images": np.zeros((1, 3, 640, 640), np.float32)}).outputs["output0"]
    assert out.shape == (1, 84, 8400)
    refused(serve(tmp_path, models / "yolo-like", fmt="TorchScript"), Reason.FORMAT_MISMATCH,
            "carries no tensor names", "spec.models[].tensors")
    refused(serve(tmp_path, models / "yolo-like", fmt="TorchScript", tensors=YOLO, precision="int8"),
            Reason.PRECISION_UNSUPPORTED, "torch-program")


def test_torch_export_metadata_comes_from_the_program(tmp_path: Path, models: Path) -> None:
    from gpupool_worker.engine.models.examples import reference_mlp

    model = ready(serve(tmp_path, models / "mlp", fmt="TorchExport"))
    assert io(model) == ([("x", "FP32", [-1, 8])], [("output_0", "FP32", [-1, 4])])
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    with torch.no_grad():
        want = reference_mlp()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.execute({"x": x}).outputs["output_0"], want, atol=1e-6)
    bf16 = ready(serve(tmp_path, models / "mlp", fmt="TorchExport", precision="bf16"))
    got = bf16.execute({"x": x}).outputs["output_0"]
    assert got.dtype == DataType.FP32.numpy_dtype
    np.testing.assert_allclose(got, want, atol=3e-2)
    named = ready(serve(tmp_path, models / "mlp", fmt="TorchExport", tensors={
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 8]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 4]}]}))
    assert io(named) == ([("features", "FP32", [-1, 8])], [("probabilities", "FP32", [-1, 4])])
    refused(serve(tmp_path, models / "mlp", fmt="TorchExport", tensors={
        "inputs": [{"name": "x", "datatype": "INT64", "shape": [-1, 8]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]}), Reason.FORMAT_MISMATCH,
        "declared x INT64[-1, 8], the program has FP32[-1, 8]")


# -- what cannot be served --------------------------------------------------------------------

@pytest.mark.parametrize(("folder", "fmt", "task", "words"), [
    ("bge-like", "SafeTensors", "Reranking", "needs a sequence-classification head"),
    ("sentiment", "SafeTensors", "Reranking", "num_labels 1"),
    ("bge-like", "SafeTensors", "ImageClassification", "format SafeTensors serves: SentenceEmbedding"),
    ("yolo-like", "TorchScript", "ImageClassification", "format TorchScript serves: Tensors"),
    ("bge-like", "ONNX", "Auto", "no .onnx file in the source"),
    ("affine", "ONNX", "SentenceEmbedding", "needs the tokenizer (tokenizer.json)"),
    ("resnet-like", "SafeTensors", "Auto", "needs config.json and *.safetensors"),
    ("mlp", "TorchScript", "Auto", "no .pt file"),
    ("affine", "ONNX", "ImageClassification", "needs one FP32 NCHW input with 3 channels"),
    ("bge-like", "SafeTensors", "TextGeneration", "runtime.type vllm"),
])
def test_format_and_task_mismatches_are_refused(tmp_path: Path, models: Path, folder: str, fmt: str, task: str,
                                                 words: str) -> None:
    refused(serve(tmp_path, models / folder, fmt=fmt, task=task, tensors=YOLO if fmt == "TorchScript" else None),
            Reason.FORMAT_MISMATCH, words)


def test_pickled_weights_are_never_loaded(tmp_path: Path, models: Path) -> None:
    folder = models.parent / "pickles" / "old-bert"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    refused(serve(tmp_path, folder), Reason.FORMAT_MISMATCH, "pickled .bin weights are never loaded")


def test_weights_larger_than_the_slice_are_refused_and_reported(tmp_path: Path, models: Path) -> None:
    entry = serve(tmp_path, models / "sentiment", device_memory=50_000)
    refused(entry, Reason.WEIGHTS_TOO_LARGE, "GPUPOOL_DEVICE_MEMORY", "48.8 KiB")
    repo = ModelRepository(None)
    with repo._lock:
        repo._entries["m"] = entry
    families = {f.name: f for f in RepositoryCollector(repo).collect()}
    (sample,) = families["gpupool_worker_model_state"].samples
    assert sample.labels["state"] == "UNAVAILABLE"
    assert sample.labels["reason"] == "WeightsTooLarge"
    assert "48.8 KiB" in sample.labels["message"]
