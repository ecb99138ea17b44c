"""Shared pieces of the worker benchmarks: start servers as subprocesses, drive them with one
client (tritonclient's asyncio gRPC client) in a closed loop, summarize latencies."""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PYTHONPATH = os.pathsep.join(str(ROOT / p) for p in ("operator", "worker", "proto"))
KSERVE_PYTHON = Path(os.environ.get("GPUPOOL_KSERVE_PYTHON", f"{sys.prefix}-kserve/bin/python"))
SENTENCE = "GPU slices cut the cost of serving sentence embeddings at scale."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_gpupool(repository: Path, *, threads: int, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpupool_worker", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-port", "0", "--model-repository", str(repository), "--log-level", "WARNING"],
        env={**os.environ, "PYTHONPATH": PYTHONPATH, "GPUPOOL_TORCH_THREADS": str(threads), **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server("gpupool-worker", proc, f"127.0.0.1:{port}")
    wait_ready(server)
    return server


def start_kserve(*, threads: int, max_threads: int = 4) -> Server:
    if not KSERVE_PYTHON.exists():
        raise SystemExit(f"no kserve venv at {KSERVE_PYTHON}: bash scripts/kserve_env.sh <venv>")
    port, http = free_port(), free_port()
    proc = subprocess.Popen(
        [str(KSERVE_PYTHON), str(Path(__file__).with_name("kserve_minilm_server.py")), str(port), str(http),
         str(threads), str(max_threads)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "worker")},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(f"kserve-modelserver(max_threads={max_threads})", proc, f"127.0.0.1:{port}")
    wait_ready(server, model="minilm")
    return server


def wait_ready(server: Server, *, model: str | None = None, timeout: float = 240) -> None:
    import tritonclient.grpc as triton

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}")
        try:
            with triton.InferenceServerClient(server.url) as c:
                if (c.is_model_ready(model) if model else c.is_server_ready()):
                    return
        except Exception:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{server.name} not ready after {timeout}s")


def text_inputs(texts: list[str]) -> list[Any]:
    import tritonclient.grpc.aio as triton_aio

    inp = triton_aio.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    return [inp]


async def closed_loop(url: str, model: str, make_inputs: Callable[[], list[Any]], *, concurrency: int,
                      seconds: float, warmup_s: float = 1.5) -> dict[str, Any]:
    """``concurrency`` clients each send a request as soon as their last one came back."""
    import tritonclient.grpc.aio as triton_aio

    latencies: list[float] = []
    errors = 0
    async with triton_aio.InferenceServerClient(url) as client:
        stop_at = 0.0
        measuring = False

        async def one_client() -> None:
            nonlocal errors
            inputs = make_inputs()
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    await client.infer(model, inputs)
                except Exception:
                    errors += 1
                    continue
                if measuring:
                    latencies.append(time.perf_counter() - t0)

        stop_at = time.perf_counter() + warmup_s
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        measuring = True
        start = time.perf_counter()
        stop_at = start + seconds
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return summarize(latencies, elapsed, errors) | {"concurrency": concurrency}


def summarize(latencies: list[float], elapsed: float, errors: int = 0) -> dict[str, Any]:
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1e3 if ordered else float("nan")

    return {
        "requests": len(ordered), "errors": errors, "seconds": elapsed,
        "throughput_rps": len(ordered) / elapsed if elapsed else 0.0,
        "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(ordered) * 1e3 if ordered else float("nan"),
    }
