"""Per-request overhead of the worker with a trivial model (Triton's add_sub, [1, 16] FP32, TorchScript).

One client, one request at a time, over loopback, against the worker and against a do-nothing
grpc.aio servicer (the floor any Python grpc.aio server starts from), with two clients:

- ``tritonclient``: tritonclient's synchronous gRPC client (builds and parses protobuf messages);
- ``lean``: grpcio's synchronous (C-core) channel sending a pre-serialized request and not
  parsing the reply, so as little client work as possible is counted.

Rounds interleave servers and clients so that load from other jobs falls on all alike. Reports
client-observed latency, the server's own time per request from ModelStatistics (request time
minus model compute, as Triton's overhead figure is measured) and the server process's CPU time
per request (gRPC C-core included), each side by side with the do-nothing server. Goal: p50 <= 0.5 ms.

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
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2  # same wire format as gpupool_proto's (which cannot share a process)

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

MODEL = "add_sub"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _tritonclient_loop(url: str, requests: int, warmup: int) -> list[float]:
    client = triton.InferenceServerClient(url)
    a = np.ones((1, 16), dtype=np.float32)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        inp = triton.InferInput(name, [1, 16], "FP32")
        inp.set_data_from_numpy(a)
        inputs.append(inp)
    for _ in range(warmup):
        client.infer(MODEL, inputs)
    latencies = []
    for _ in range(requests):
        t0 = time.perf_counter()
        client.infer(MODEL, inputs)
        latencies.append(time.perf_counter() - t0)
    client.close()
    return latencies


def _lean_loop(url: str, requests: int, warmup: int) -> list[float]:
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=[1, 16])
        request.raw_input_contents.append(np.ones(16, np.float32).tobytes())
    payload = request.SerializeToString()
    with grpc.insecure_channel(url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # bytes in, bytes out
        for _ in range(warmup):
            call(payload)
        latencies = []
        for _ in range(requests):
            t0 = time.perf_counter()
            call(payload)
            latencies.append(time.perf_counter() - t0)
    return latencies


CLIENTS = {"tritonclient": _tritonclient_loop, "lean": _lean_loop}


def _start_null(program: Path | None = None) -> Server:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.worker._null_server", str(port),
                             *([str(program)] if program else [])],
                            env={**os.environ, "PYTHONPATH": PYTHONPATH + os.pathsep + str(ROOT)})
    server = Server("null+model" if program else "null", proc, f"127.0.0.1:{port}")
    wait_ready(server)
    return server


def _statistics(url: str) -> dict[str, Any]:
    with triton.InferenceServerClient(url) as client:
        return client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="per round, server and client")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    args = parser.parse_args()
    load_before = os.getloadavg()
    latencies: dict[tuple[str, str], list[float]] = {}
    cpu: dict[str, list[float]] = {"worker": [], "null": [], "null+model": []}  # server CPU s per request
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        write_add_sub(repo / MODEL, max_batch_size=8, max_queue_delay_us=args.max_queue_delay_us)
        servers = {"worker": start_gpupool(repo, threads=1), "null": _start_null(),
                   "null+model": _start_null(repo / MODEL / "model.pt")}
        try:
            before = _statistics(servers["worker"].url)
            for i in range(args.rounds):
                order = list(servers.items())
                for name, server in order[i % 3:] + order[: i % 3]:
                    for client, loop in CLIENTS.items():
                        loop(server.url, 0, args.warmup)
                        cpu0 = _cpu_seconds(server.proc.pid)
                        latencies.setdefault((name, client), []).extend(
                            loop(server.url, args.requests, 0))
                        cpu[name].append((_cpu_seconds(server.proc.pid) - cpu0) / args.requests)
            after = _statistics(servers["worker"].url)
        finally:
            for server in servers.values():
                server.stop()
    load_after = os.getloadavg()

    def delta(*path: str) -> int:
        def get(d: dict[str, Any], keys: tuple[str, ...]) -> int:
            for k in keys:
                d = d.get(k, {})
            return int(d or 0)  # type: ignore[call-overload]

        return get(after, path) - get(before, path)

    n = delta("inference_stats", "success", "count")
    success_us = delta("inference_stats", "success", "ns") / n / 1e3
    phases = ("compute_input", "compute_infer", "compute_output")
    compute_us = sum(delta("inference_stats", p, "ns") for p in phases) / n / 1e3
    queue_us = delta("inference_stats", "queue", "ns") / n / 1e3
    client_side = {f"{server}/{client}": summarize(lat, sum(lat)) for (server, client), lat in latencies.items()}
    cpu_us = {name: float(np.median(v)) * 1e6 for name, v in cpu.items()}
    data = {"client": client_side, "server": {
        "requests": n, "request_us": success_us, "compute_us": compute_us, "queue_us": queue_us,
        "overhead_us": success_us - compute_us, "process_cpu_us_per_request": cpu_us},
        "load_average": {"before": load_before, "after": load_after}, "settings": vars(args)}

    def row(client: str) -> str:
        w, z = client_side[f"worker/{client}"], client_side[f"null/{client}"]
        zm = client_side[f"null+model/{client}"]
        return (f"| {client} | {w['p50_ms']:.3f} / {w['p90_ms']:.3f} / {w['p99_ms']:.3f} | "
                f"{z['p50_ms']:.3f} / {z['p90_ms']:.3f} / {z['p99_ms']:.3f} | "
                f"{zm['p50_ms']:.3f} / {zm['p90_ms']:.3f} / {zm['p99_ms']:.3f} | "
                f"{w['p50_ms'] - z['p50_ms']:.3f} |")

    lines = [f"Trivial model (add_sub, [1,16] FP32, TorchScript, max_queue_delay={args.max_queue_delay_us} us), "
             f"{args.rounds} interleaved rounds of {args.requests} sequential requests per server and client, "
             f"loopback. Load average before / after: {load_before[0]:.1f} / {load_after[0]:.1f} (2 CPUs, shared).",
             "", "Client-observed latency, ms:", "",
             "| client | worker p50 / p90 / p99 | do-nothing server p50 / p90 / p99 | "
             "do-nothing + the TorchScript call p50 / p90 / p99 | worker p50 above floor |",
             "|---|---|---|---|---|", row("tritonclient"), row("lean"), "",
             "Server side:", "", "| measure | worker | do-nothing server | do-nothing + the TorchScript call |",
             "|---|---|---|---|",
             f"| server process CPU per request (gRPC C-core + Python) | {cpu_us['worker']:.0f} µs | "
             f"{cpu_us['null']:.0f} µs | {cpu_us['null+model']:.0f} µs |",
             f"| server time per request (ModelStatistics success) | {success_us:.1f} µs | - | - |",
             f"| of which model compute | {compute_us:.1f} µs | - | - |",
             f"| of which batcher queue | {queue_us:.1f} µs | - | - |",
             f"| server overhead (request - compute) | {success_us - compute_us:.1f} µs | - | - |",
             "", "The goal (client p50 <= 0.5 ms) is measured end to end, so it includes the gRPC floor: "
             "the do-nothing servicer's p50 with the same client is the best any grpc.aio worker can reach "
             "on this machine. The third server is the do-nothing one calling the same TorchScript program "
             "once per request (no parsing, no batcher, no statistics): what the model call alone adds in "
             "a server process, where caches are cold between requests (the same call takes ~6 µs in a "
             "tight loop)."]
    write("worker-overhead", data, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
