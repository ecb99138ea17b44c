"""Per-request overhead of the worker with a trivial model (Triton's add_sub, [1, 16] FP32, TorchScript).

One client, one request at a time (tritonclient's synchronous gRPC client), over loopback. Reports
client-observed latency and the server's own overhead from ModelStatistics (request time minus
model compute), as Triton's ~0.13 ms figure is measured. Goal: p50 <= 0.5 ms.

    PYTHONPATH=operator:worker:proto python -m benchmarks.worker.bench_overhead
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton

from benchmarks._results import write
from benchmarks.worker._harness import (
    PYTHONPATH,
    ROOT,
    Server,
    free_port,
    start_gpupool,
    summarize,
    wait_ready,
)
from gpupool_worker.engine.models.examples import write_add_sub


def _client_loop(url: str, model: str, requests: int, warmup: int) -> tuple[list[float], float]:
    client = triton.InferenceServerClient(url)
    a = np.ones((1, 16), dtype=np.float32)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        inp = triton.InferInput(name, [1, 16], "FP32")
        inp.set_data_from_numpy(a)
        inputs.append(inp)
    for _ in range(warmup):
        client.infer(model, inputs)
    latencies = []
    start = time.perf_counter()
    for _ in range(requests):
        t0 = time.perf_counter()
        client.infer(model, inputs)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    client.close()
    return latencies, elapsed


def _null_floor(requests: int, warmup: int) -> dict[str, float]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.worker._null_server", str(port)],
                            env={**os.environ, "PYTHONPATH": PYTHONPATH + os.pathsep + str(ROOT)})
    server = Server("null", proc, f"127.0.0.1:{port}")
    try:
        wait_ready(server)
        latencies, elapsed = _client_loop(server.url, "add_sub", requests, warmup)
    finally:
        server.stop()
    return summarize(latencies, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        write_add_sub(repo / "add_sub", max_batch_size=8, max_queue_delay_us=0)
        server = start_gpupool(repo, threads=1)
        try:
            with triton.InferenceServerClient(server.url) as client:
                before = client.get_inference_statistics("add_sub", as_json=True)["model_stats"][0]
            latencies, elapsed = _client_loop(server.url, "add_sub", args.requests, args.warmup)
            with triton.InferenceServerClient(server.url) as client:
                after = client.get_inference_statistics("add_sub", as_json=True)["model_stats"][0]
        finally:
            server.stop()

    def delta(*path: str) -> int:
        def get(d: dict, keys: tuple[str, ...]) -> int:  # type: ignore[type-arg]
            for k in keys:
                d = d.get(k, {})
            return int(d or 0)  # type: ignore[call-overload]

        return get(after, path) - get(before, path)

    n = delta("inference_stats", "success", "count")
    success_us = delta("inference_stats", "success", "ns") / n / 1e3
    phases = ("compute_input", "compute_infer", "compute_output")
    compute_us = sum(delta("inference_stats", p, "ns") for p in phases) / n / 1e3
    queue_us = delta("inference_stats", "queue", "ns") / n / 1e3
    client_side = summarize(latencies, elapsed)
    floor = _null_floor(args.requests, args.warmup)
    data = {"client": client_side, "null_server_floor": floor, "server": {
        "requests": n, "request_us": success_us, "compute_us": compute_us, "queue_us": queue_us,
        "overhead_us": success_us - compute_us}, "settings": vars(args)}
    lines = [f"Trivial model (add_sub, [1,16] FP32), {args.requests} sequential requests after {args.warmup} warm-up, "
             "tritonclient sync gRPC client, loopback.", "",
             "| measure | value |", "|---|---|",
             f"| client p50 latency | {client_side['p50_ms']:.3f} ms |",
             f"| client p90 latency | {client_side['p90_ms']:.3f} ms |",
             f"| client p99 latency | {client_side['p99_ms']:.3f} ms |",
             f"| same client vs a do-nothing grpc.aio servicer (p50 / p99) | {floor['p50_ms']:.3f} / "
             f"{floor['p99_ms']:.3f} ms |",
             f"| worker p50 above that floor | {client_side['p50_ms'] - floor['p50_ms']:.3f} ms |",
             f"| requests/s (one client) | {client_side['throughput_rps']:.0f} |",
             f"| server time per request (ModelStatistics success) | {success_us:.1f} µs |",
             f"| of which model compute | {compute_us:.1f} µs |",
             f"| of which batcher queue | {queue_us:.1f} µs |",
             f"| server overhead (request - compute) | {success_us - compute_us:.1f} µs |"]
    write("worker-overhead", data, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
