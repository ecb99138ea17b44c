"""The worker serving a pool's model end to end: ``python -m gpupool_worker serve`` with only the
operator's environment (GPUPOOL_MODEL_URI and friends, a mounted credentials Secret), fetching
from a real server, then answering NVIDIA's tritonclient. And when the model cannot be served,
the worker stays up and not ready, and says why on every surface an operator or user looks at:
gRPC health (NOT_SERVING), ServerReady/ModelReady, ModelMetadata's error, RepositoryIndex and the
``gpupool_worker_model_state`` metric."""

from __future__ import annotations

import hashlib
import re
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import tiny_models
from support.https_server import FileServer, serve_files
from support.hub_mirror import HubMirror, hub_mirror
from support.oci_registry import Registry, oci_registry
from support.s3_server import S3Server, s3_server
from tritonclient.utils import InferenceServerException

from .conftest import WorkerProcess


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pool-models")


@pytest.fixture(scope="module")
def s3(work: Path) -> Iterator[S3Server]:
    with s3_server(work) as server:
        yield server


@pytest.fixture(scope="module")
def https_files(work: Path) -> Iterator[FileServer]:
    (work / "www").mkdir()
    with serve_files(work / "www", work / "pki") as server:
        yield server


@pytest.fixture(scope="module")
def registry(work: Path) -> Iterator[Registry]:
    with oci_registry(work) as reg:
        yield reg


@pytest.fixture(scope="module")
def hub(work: Path) -> Iterator[HubMirror]:
    (work / "hub").mkdir()
    with hub_mirror(work / "hub") as mirror:
        yield mirror


def pool_env(work: Path, uri: str, name: str, **extra: str) -> dict[str, str]:
    return {"GPUPOOL_MODEL_URI": uri, "GPUPOOL_MODEL_NAME": name, "GPUPOOL_MODEL_CACHE": str(work / "node-cache"),
            "GPUPOOL_DEVICE": "cpu", "GPUPOOL_PRECISION": "fp32", "GPUPOOL_ENGINE": "eager",
            "GPUPOOL_MAX_BATCH_SIZE": "8", "GPUPOOL_MAX_QUEUE_DELAY": "1ms", **extra}


def secret(directory: Path, **keys: str | bytes) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    for key, value in keys.items():
        (directory / key).write_bytes(value if isinstance(value, bytes) else value.encode())
    return str(directory)


def texts(name: str, items: list[str]) -> triton.InferInput:
    inp = triton.InferInput(name, [len(items)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in items], dtype=object))
    return inp


def metadata(client: triton.InferenceServerClient, name: str) -> tuple[list[tuple[str, str, list[int]]], ...]:
    meta = client.get_model_metadata(name, as_json=True)
    return tuple([(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta[k]]
                 for k in ("inputs", "outputs"))


def test_s3_sentence_embedding(worker_factory: Callable[..., WorkerProcess], work: Path, s3: S3Server) -> None:
    folder = tiny_models.write_sentence_bert(work / "src" / "bge-like", pooling="cls")
    client = s3.client()
    client.create_bucket(Bucket="ml-models")
    for path in folder.rglob("*"):
        if path.is_file():
            client.put_object(Bucket="ml-models", Key=f"text/bge-like/{path.relative_to(folder)}",
                              Body=path.read_bytes())
    w = worker_factory(None, env=pool_env(work, "s3://ml-models/text/bge-like", "bge-small",
                                          GPUPOOL_MODEL_TASK="SentenceEmbedding",
                                          GPUPOOL_SOURCE_CREDENTIALS=str(s3.secret(work / "s3-secret"))))
    with triton.InferenceServerClient(w.url) as c:
        assert c.is_server_ready()
        assert metadata(c, "bge-small") == ([("text", "BYTES", [-1])], [("embedding", "FP32", [-1, 32])])
        out = c.infer("bge-small", [texts("text", ["gpu slices", "cut inference cost"])]).as_numpy("embedding")
    assert out.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert "fetching 5 file(s)" in w.log() or "fetching" in w.log()


def test_hf_reranker_through_hf_endpoint(worker_factory: Callable[..., WorkerProcess], work: Path,
                                         hub: HubMirror) -> None:
    commit = hub.publish("BAAI/bge-reranker-base", tiny_models.write_xlmr_cross_encoder(work / "src" / "rr"))
    w = worker_factory(None, env=pool_env(work, f"hf://BAAI/bge-reranker-base@{commit}", "bge-reranker-base",
                                          HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0"))
    with triton.InferenceServerClient(w.url) as c:
        assert metadata(c, "bge-reranker-base") == ([("query", "BYTES", [-1]), ("document", "BYTES", [-1])],
                                                    [("score", "FP32", [-1]), ("logit", "FP32", [-1])])
        r = c.infer("bge-reranker-base", [texts("query", ["cheap inference"] * 2),
                                          texts("document", ["gpu slices", "a lazy dog"])])
    scores = r.as_numpy("score")
    assert scores.shape == (2,)
    assert ((scores > 0) & (scores < 1)).all()


def test_oci_onnx_image_classifier(worker_factory: Callable[..., WorkerProcess], work: Path,
                                   registry: Registry) -> None:
    folder = tiny_models.write_onnx_classifier(work / "src" / "resnet")
    target = registry.push("vision/resnet50", "v1.5", [Path(p.name) for p in folder.iterdir()], cwd=folder)
    w = worker_factory(None, env=pool_env(work, f"oci://{target}", "resnet50-classifier",
                                          GPUPOOL_MODEL_FORMAT="ONNX", GPUPOOL_MODEL_TASK="ImageClassification"))
    image = triton.InferInput("image", [1, 240, 320, 3], "UINT8")
    image.set_data_from_numpy(np.random.default_rng(0).integers(0, 256, (1, 240, 320, 3), dtype=np.uint8))
    with triton.InferenceServerClient(w.url) as c:
        r = c.infer("resnet50-classifier", [image])
    assert r.as_numpy("probabilities").shape == (1, 10)
    assert r.as_numpy("label")[0].decode().startswith("class_")


# -- bad input: not ready, and why ------------------------------------------------------------

def assert_not_ready_because(w: WorkerProcess, name: str, reason: str, *words: str) -> None:
    with grpc.insecure_channel(w.url) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
    with triton.InferenceServerClient(w.url) as c:
        assert c.is_server_live()
        assert not c.is_server_ready()
        assert not c.is_model_ready(name)
        (entry,) = c.get_model_repository_index(as_json=True)["models"]
        assert entry["state"] == "UNAVAILABLE"
        for word in words:
            assert word in entry["reason"], entry["reason"]
        with pytest.raises(InferenceServerException) as err:
            c.get_model_metadata(name)
        assert "UNAVAILABLE" in str(err.value.status())
        assert words[0] in str(err.value.message())
    with urllib.request.urlopen(f"http://127.0.0.1:{w.metrics_port}/metrics", timeout=10) as rsp:
        metrics = rsp.read().decode()
    line = next(ln for ln in metrics.splitlines() if ln.startswith("gpupool_worker_model_state{"))
    assert f'reason="{reason}"' in line
    assert 'state="UNAVAILABLE"' in line
    # what the operator makes of it: the pool's ModelLoadFailed condition carries the worker's reason
    from gpupool_operator.adapters.modelload import failures_from_metrics, load_condition

    (failure,) = failures_from_metrics(metrics, "pool-m-0")
    assert (failure.model, failure.reason) == (name, reason)
    cond = load_condition([failure], 1, datetime.now(UTC))
    assert (cond.type, cond.status.value, cond.reason) == ("ModelLoadFailed", "True", reason)
    assert w.proc.poll() is None  # up, not crash-looping


def test_wrong_credentials(worker_factory: Callable[..., WorkerProcess], work: Path, s3: S3Server) -> None:
    creds = s3.secret(work / "bad-secret", AWS_SECRET_ACCESS_KEY="not-the-key")
    w = worker_factory(None, env=pool_env(work, "s3://ml-models/text/bge-like", "m",
                                          GPUPOOL_SOURCE_CREDENTIALS=str(creds)))
    assert_not_ready_because(w, "m", "CredentialsRejected", "SignatureDoesNotMatch", str(creds))


def test_checksum_mismatch_and_unknown_scheme(worker_factory: Callable[..., WorkerProcess], work: Path,
                                              https_files: FileServer) -> None:
    (https_files.root / "model.onnx").write_bytes(b"tampered")
    ca = secret(work / "ca-secret", **{"ca.crt": https_files.pki.ca_cert.read_bytes()})
    want = hashlib.sha256(b"the real weights").hexdigest()
    w = worker_factory(None, env=pool_env(work, https_files.url("model.onnx"), "m", GPUPOOL_MODEL_FORMAT="ONNX",
                                          GPUPOOL_MODEL_SHA256=want, GPUPOOL_SOURCE_CREDENTIALS=ca))
    assert_not_ready_because(w, "m", "ChecksumMismatch", "does not match the expected", want)
    w = worker_factory(None, env=pool_env(work, "gs://bucket/model", "m"))
    assert_not_ready_because(w, "m", "UnknownScheme", "unknown scheme gs://", "storage.googleapis.com")


def test_weights_larger_than_the_slice(worker_factory: Callable[..., WorkerProcess], work: Path) -> None:
    claim = work / "pvc" / "models"
    tiny_models.write_bert_classifier(claim / "sentiment")
    w = worker_factory(None, env=pool_env(work, "pvc://models/sentiment", "m", GPUPOOL_PVC_ROOT=str(work / "pvc"),
                                          GPUPOOL_DEVICE_MEMORY="64Ki"))
    assert_not_ready_because(w, "m", "WeightsTooLarge", "more than the 64.0 KiB")
    assert re.search(r"model m is unavailable: WeightsTooLarge", w.log())
