"""The worker process with real clients and the real MiniLM: the two-step stop (drain on SIGTERM
or ``gpupool-worker drain``, then stop), malformed protobuf answered INVALID_ARGUMENT with a
rate-limited log, failures counted once each, and a huge request that does not hold up small ones."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gpupool_worker.engine.models.examples import write_minilm

from .conftest import WorkerProcess


@pytest.fixture(scope="module")
def minilm_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("drain-minilm")
    write_minilm(root / "minilm", max_batch_size=64)
    return root


def text(*items: str) -> triton.InferInput:
    inp = triton.InferInput("text", [len(items)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in items], dtype=object))
    return inp


def health(worker: WorkerProcess) -> int:
    with grpc.insecure_channel(worker.url) as channel:
        return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status)


def metrics(worker: WorkerProcess) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=10).read().decode()


def drain_env(tmp_path: Path, drain_s: float) -> dict[str, str]:
    return {"GPUPOOL_DRAIN_SECONDS": str(drain_s), "GPUPOOL_STOP_GRACE_SECONDS": "5",
            "GPUPOOL_PID_FILE": str(tmp_path / "worker.pid")}


def test_sigterm_reports_not_ready_serves_through_the_drain_then_exits(
    worker_factory: Callable[..., WorkerProcess], minilm_repo: Path, tmp_path: Path,
) -> None:
    worker = worker_factory(minilm_repo, env=drain_env(tmp_path, 3))
    client = triton.InferenceServerClient(worker.url)
    assert client.is_server_ready()
    assert health(worker) == health_pb2.HealthCheckResponse.SERVING
    signalled = time.monotonic()
    worker.proc.send_signal(15)
    while client.is_server_ready():
        time.sleep(0.02)
    # not ready (Kubernetes takes the pod out of its endpoints) ...
    assert health(worker) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert not client.is_model_ready("minilm")
    # ... but whoever still routes here is served
    for _ in range(3):
        assert client.infer("minilm", [text("still serving while draining")]).as_numpy("embedding").shape == (1, 384)
    assert worker.proc.wait(30) == 0
    assert time.monotonic() - signalled >= 3  # it served the whole drain period
    client.close()
    log = worker.log()
    assert "draining: not ready, still serving for 3.0 s" in log
    assert "stopping: refusing new requests" in log
    assert not (tmp_path / "worker.pid").exists()


def test_the_drain_command_begins_the_drain_before_sigterm(
    worker_factory: Callable[..., WorkerProcess], minilm_repo: Path, tmp_path: Path,
) -> None:
    env = drain_env(tmp_path, 2)
    worker = worker_factory(minilm_repo, env=env)
    client = triton.InferenceServerClient(worker.url)
    started = time.monotonic()
    hook = subprocess.Popen([sys.executable, "-m", "gpupool_worker", "drain"],
                            env={**worker.env, **env}, stderr=subprocess.PIPE, text=True)
    while client.is_server_ready():
        time.sleep(0.02)
    assert client.infer("minilm", [text("served during the preStop hook")]).as_numpy("embedding").shape == (1, 384)
    _, err = hook.communicate(timeout=30)
    assert hook.returncode == 0, err
    assert time.monotonic() - started >= 2  # the hook waits out the drain, delaying the kubelet's SIGTERM
    assert f"worker {worker.proc.pid} reports not-ready" in err
    # SIGTERM after the drain: it stops without serving a second drain period
    worker.proc.send_signal(15)
    assert worker.proc.wait(30) == 0
    assert worker.log().count("draining: not ready") == 1
    client.close()


def test_drain_without_a_worker_still_waits_and_succeeds(tmp_path: Path) -> None:
    env = {**os.environ, **drain_env(tmp_path, 0.2)}
    done = subprocess.run([sys.executable, "-m", "gpupool_worker", "drain"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0
    assert "no running worker found" in done.stderr


def test_malformed_protobuf_is_invalid_argument_logged_once_with_a_count(
    worker_factory: Callable[..., WorkerProcess], minilm_repo: Path, tmp_path: Path,
) -> None:
    worker = worker_factory(minilm_repo, env=drain_env(tmp_path, 0))
    with grpc.insecure_channel(worker.url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for _ in range(5):
            with pytest.raises(grpc.RpcError) as err:
                call(b"\xff\xff\xff\xff not protobuf", timeout=10)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid inference.ModelInferRequest message" in str(err.value.details())
        ready = channel.unary_unary("/inference.GRPCInferenceService/ServerReady")
        with pytest.raises(grpc.RpcError) as err:
            ready(b"\x0a\xff", timeout=10)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    client = triton.InferenceServerClient(worker.url)
    assert client.infer("minilm", [text("fine after garbage")]).as_numpy("embedding").shape == (1, 384)
    client.close()
    log = worker.log()
    assert log.count("not a valid inference.ModelInferRequest") == 1  # 5 requests, one line
    assert "Traceback" not in log


def test_each_failed_request_counts_once(
    worker_factory: Callable[..., WorkerProcess], minilm_repo: Path, tmp_path: Path,
) -> None:
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    worker = worker_factory(minilm_repo, env=drain_env(tmp_path, 0))
    with grpc.insecure_channel(worker.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        bad_type = service_pb2.ModelInferRequest(model_name="minilm")
        bad_type.inputs.add(name="text", datatype="STRING", shape=[1])
        bad_type.raw_input_contents.append(b"")
        bad_utf8 = service_pb2.ModelInferRequest(model_name="minilm")
        bad_utf8.inputs.add(name="text", datatype="BYTES", shape=[1])
        bad_utf8.raw_input_contents.append(len(b"\xff\xfe").to_bytes(4, "little") + b"\xff\xfe")
        for request in (bad_type, bad_utf8):  # one refused in conversion, one in tokenizing
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(request, timeout=30)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    client = triton.InferenceServerClient(worker.url)
    stats = client.get_inference_statistics("minilm", as_json=True)["model_stats"][0]
    assert int(stats["inference_stats"]["fail"]["count"]) == 2
    assert 'gpupool_worker_requests_total{model="minilm",outcome="failure"} 2.0' in metrics(worker)
    assert 'gpupool_worker_errors_total{kind="invalid_argument",model="minilm"} 2.0' in metrics(worker)
    client.close()


def test_a_huge_request_does_not_hold_up_small_ones(
    worker_factory: Callable[..., WorkerProcess], minilm_repo: Path, tmp_path: Path,
) -> None:
    # 60 strings of 1 MB: a legal request once the message limit allows it. Each string is cut to
    # what 256 tokens can use before tokenizing, and the request runs in chunks with small
    # requests between them, so a small request waits for one chunk, not for the whole request.
    worker = worker_factory(minilm_repo, env={**drain_env(tmp_path, 0), "GPUPOOL_MAX_MESSAGE_BYTES": str(80 << 20)})
    sentence = "an embedding service reads only what its model can use "
    huge = [(sentence * (1_000_000 // len(sentence)))] * 60
    big_client = triton.InferenceServerClient(worker.url)
    small_client = triton.InferenceServerClient(worker.url)
    done: list[object] = []

    def big() -> None:
        done.append(big_client.infer("minilm", [text(*huge)], client_timeout=300).as_numpy("embedding"))

    thread = threading.Thread(target=big)
    thread.start()
    while 'gpupool_worker_executions_total{model="minilm"} 0.0' in metrics(worker):
        time.sleep(0.01)  # the huge request's first chunk has run
    small = small_client.infer("minilm", [text("a small request")]).as_numpy("embedding")
    assert not done  # answered while the huge request was still running
    thread.join(300)
    embeddings = done[0]
    assert isinstance(embeddings, np.ndarray)
    assert embeddings.shape == (60, 384)
    # every row is the embedding of the string's first 256 tokens, as one short request gets it
    prefix = " ".join(sentence.split() * 40)
    alone = small_client.infer("minilm", [text(prefix)]).as_numpy("embedding")
    assert float(embeddings[0] @ alone[0]) > 0.999
    assert small.shape == (1, 384)
    stats = small_client.get_inference_statistics("minilm", as_json=True)["model_stats"][0]
    assert int(stats["execution_count"]) >= 60 * 256 // 1024  # chunks of at most 1,024 tokens
    big_client.close()
    small_client.close()
