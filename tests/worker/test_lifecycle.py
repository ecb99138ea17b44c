"""Worker lifecycle as a process: graceful drain on SIGTERM, deadlines, message size limits,
readiness when a model is broken, and refusing bad settings at startup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from gpupool_worker.engine.models.examples import write_add_sub, write_minilm, write_tiny_encoder

from .conftest import PYTHONPATH, WorkerProcess

LONG_TEXTS = [" ".join(["the quick brown fox jumps over the lazy dog"] * 30)] * 24


def long_batch() -> triton.InferInput:
    inp = triton.InferInput("text", [len(LONG_TEXTS)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in LONG_TEXTS], dtype=object))
    return inp


@pytest.fixture(scope="module")
def minilm_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("drain")
    # one long batch must hold the engine here (no chunking): the deadline test needs a busy engine
    write_minilm(root / "minilm", max_batch_size=64, max_queue_delay_us=0, request_token_budget=100_000)
    return root


def test_sigterm_drains_in_flight_requests_then_exits_cleanly(
    worker_factory: Callable[..., WorkerProcess], minilm_repo: Path,
) -> None:
    # a stop grace no loaded test machine runs past: the work in flight must finish, not be cut
    worker = worker_factory(minilm_repo, env={"GPUPOOL_DRAIN_SECONDS": "1", "GPUPOOL_STOP_GRACE_SECONDS": "120"})
    client = triton.InferenceServerClient(worker.url)
    results: list[object] = []
    started = threading.Event()

    def call() -> None:
        started.set()
        try:
            results.append(client.infer("minilm", [long_batch()]).as_numpy("embedding").shape)
        except InferenceServerException as exc:
            results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    started.wait()
    # wait until the worker has the requests (the first executes, the rest queue)
    while 'gpupool_worker_inflight_requests{model="minilm"} 3.0' not in _metrics(worker):
        time.sleep(0.01)
    worker.proc.send_signal(15)
    for t in threads:
        t.join(120)
    assert results == [(24, 384)] * 3, [str(r) for r in results]
    assert worker.proc.wait(180) == 0
    assert "draining" in worker.log()
    client.close()


def _metrics(worker: WorkerProcess) -> str:
    import urllib.request

    return urllib.request.urlopen(
        f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=10).read().decode()


def test_an_expired_deadline_is_not_executed(
    worker_factory: Callable[..., WorkerProcess], minilm_repo: Path,
) -> None:
    worker = worker_factory(minilm_repo)
    client = triton.InferenceServerClient(worker.url)
    slow: list[object] = []
    blocker = threading.Thread(target=lambda: slow.append(client.infer("minilm", [long_batch()])))
    blocker.start()
    # the long batch is on the engine (tokenized before queueing: in flight is not enough)
    while 'gpupool_worker_executing_requests{model="minilm"} 1.0' not in _metrics(worker):
        time.sleep(0.01)
    short = triton.InferInput("text", [1], "BYTES")
    short.set_data_from_numpy(np.array([b"late"], dtype=object))
    with pytest.raises(InferenceServerException) as err:
        client.infer("minilm", [short], client_timeout=0.001)
    assert "Deadline" in str(err.value) or "DEADLINE" in str(err.value.status())
    blocker.join(120)
    stats = client.get_inference_statistics("minilm", as_json=True)["model_stats"][0]
    # the long batch ran; the expired single-row request never reached the model
    assert int(stats["inference_count"]) == len(LONG_TEXTS)
    client.close()


def test_oversized_messages_are_refused_and_the_worker_lives_on(
    worker_factory: Callable[..., WorkerProcess], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("small-messages")
    write_add_sub(root / "add_sub", max_batch_size=4096)
    worker = worker_factory(root, env={"GPUPOOL_MAX_MESSAGE_BYTES": "65536"})
    client = triton.InferenceServerClient(worker.url)
    big = np.zeros((2048, 16), dtype=np.float32)  # 2 x 128 KiB > 64 KiB
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        inp = triton.InferInput(name, list(big.shape), "FP32")
        inp.set_data_from_numpy(big)
        inputs.append(inp)
    with pytest.raises(InferenceServerException) as err:
        client.infer("add_sub", inputs)
    assert "RESOURCE_EXHAUSTED" in str(err.value.status())
    small = []
    for name in ("INPUT0", "INPUT1"):
        inp = triton.InferInput(name, [1, 16], "FP32")
        inp.set_data_from_numpy(np.ones((1, 16), dtype=np.float32))
        small.append(inp)
    np.testing.assert_array_equal(client.infer("add_sub", small).as_numpy("OUTPUT0"), 2 * np.ones((1, 16)))
    client.close()


def test_a_broken_model_makes_the_server_unready_but_the_rest_serve(
    worker_factory: Callable[..., WorkerProcess], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("broken")
    write_tiny_encoder(root / "tiny")
    (root / "broken").mkdir()
    (root / "broken" / "model.json").write_text(json.dumps({"kind": "torchscript", "inputs": []}))
    worker = worker_factory(root)
    client = triton.InferenceServerClient(worker.url)
    assert not client.is_server_ready()
    assert client.is_model_ready("tiny")
    assert not client.is_model_ready("broken")
    index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    assert index["broken"]["state"] == "UNAVAILABLE"
    assert "must declare inputs" in index["broken"]["reason"]
    inp = triton.InferInput("text", [1], "BYTES")
    inp.set_data_from_numpy(np.array([b"x"], dtype=object))
    with pytest.raises(InferenceServerException) as err:
        client.infer("broken", [inp])
    assert "UNAVAILABLE" in str(err.value.status())
    assert "must declare inputs" in str(err.value.message())
    assert client.infer("tiny", [inp]).as_numpy("embedding").shape == (1, 32)
    client.close()


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"GPUPOOL_DEVICE_SHARE": "1.5"}, ["--builtin", "minilm"], "GPUPOOL_DEVICE_SHARE must be in (0, 1]"),
        ({"GPUPOOL_PRICE_PER_HOUR": "cheap"}, ["--builtin", "minilm"],
         "GPUPOOL_PRICE_PER_HOUR='cheap' is not a number"),
        ({"GPUPOOL_BUILTIN_MODELS": "gpt5"}, [], "unknown built-in model(s) ['gpt5']"),
        ({}, [], "nothing to serve"),
    ],
)
def test_bad_settings_stop_the_worker_with_a_message_naming_them(
    env: dict[str, str], args: list[str], message: str,
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
    done = subprocess.run([sys.executable, "-m", "gpupool_worker", "serve", *args],
                          env={**clean, "PYTHONPATH": PYTHONPATH, **env}, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert message in done.stderr


def test_example_repository_command_writes_loadable_models(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "gpupool_worker", "example-repository", str(tmp_path),
                           "--no-minilm"], env={**os.environ, "PYTHONPATH": PYTHONPATH},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["add_sub", "mlp", "tiny_encoder"]
    for name in ("add_sub", "mlp", "tiny_encoder"):
        assert json.loads((tmp_path / name / "model.json").read_text())["kind"]
