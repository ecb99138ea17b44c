"""Fairness under huge requests, A/B across checkouts: for each ROOT (a checkout, e.g. an export of
an older commit: ``git archive REF | tar -x -C DIR``), start its worker (MiniLM, engine onnx, 2
threads), measure small requests (one sentence, one every 20 ms) idle, then while a second client
process sends 60 x 1 MB requests back to back, then idle again; print one JSON line per ROOT.
``benchmarks/results/worker-engines.md`` records a run of it (its notes).

    PYTHONPATH=operator:worker:proto python -m benchmarks.worker.fairness_ab ROOT [ROOT ...] [--seconds 8] \
        [--huge-nice 0,19]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.worker._harness import SENTENCE, Server, free_port, summarize, wait_ready

_HUGE_CLIENT = r"""
import sys, time
import numpy as np
import tritonclient.grpc as triton
s = "an embedding service reads only what its model can use "
huge = np.array([(s * (1_000_000 // len(s))).encode()] * 60, dtype=object)
c = triton.InferenceServerClient(sys.argv[1])
inp = triton.InferInput("text", [60], "BYTES")
inp.set_data_from_numpy(huge)
while True:
    t0 = time.perf_counter()
    c.infer("minilm", [inp], client_timeout=600)
    print(round(time.perf_counter() - t0, 2), flush=True)
"""

def small(url: str, duration: float) -> dict[str, Any]:
    import tritonclient.grpc as triton

    lat = []
    with triton.InferenceServerClient(url) as c:
        inp = triton.InferInput("text", [1], "BYTES")
        inp.set_data_from_numpy(np.array([SENTENCE.encode()], dtype=object))
        for _ in range(20):
            c.infer("minilm", [inp])
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            c.infer("minilm", [inp])
            lat.append(time.perf_counter() - t0)
            time.sleep(0.02)
    return summarize(lat, duration)


def measure(root: Path, seconds: float, cache: Path, huge_nice: int = 0) -> dict[str, Any]:
    from gpupool_worker.engine.models.examples import write_minilm

    repo = Path(tempfile.mkdtemp())
    write_minilm(repo / "minilm", max_batch_size=64, engine="onnx", precision="fp32")
    port = free_port()
    pythonpath = os.pathsep.join(str(root / p) for p in ("operator", "worker", "proto"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpupool_worker", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-port", "0", "--model-repository", str(repo), "--log-level", "WARNING"],
        env={**os.environ, "PYTHONPATH": pythonpath, "GPUPOOL_TORCH_THREADS": "2", "GPUPOOL_ONNX_CACHE": str(cache),
             "GPUPOOL_DRAIN_SECONDS": "0", "GPUPOOL_MAX_MESSAGE_BYTES": str(80 << 20)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(str(root), proc, f"127.0.0.1:{port}")
    wait_ready(server)
    try:
        idle = small(server.url, seconds)
        big = subprocess.Popen(["nice", "-n", str(huge_nice), sys.executable, "-c", _HUGE_CLIENT, server.url],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(2.0)
        loaded = small(server.url, seconds)
        big.kill()
        out, _ = big.communicate(60)
        idle2 = small(server.url, seconds)
    finally:
        server.stop()
    return {"root": str(root), "idle_p50": round(idle["p50_ms"], 1), "idle_p99": round(idle["p99_ms"], 1),
            "loaded_p50": round(loaded["p50_ms"], 1), "loaded_p99": round(loaded["p99_ms"], 1),
            "idle2_p99": round(idle2["p99_ms"], 1), "ratio": round(loaded["p99_ms"] / idle["p99_ms"], 2),
            "huge_s": out.split(), "huge_client_nice": huge_nice, "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", type=Path)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--huge-nice", default="0",
                        help="comma-separated nice values for the huge requests' client process, each measured: on "
                             "this 2-core machine its own serialization of 60 MB competes with the server for the "
                             "cores, which a client on another machine would not (19: it gets what is left)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        for root in args.roots:
            for nice in (int(n) for n in args.huge_nice.split(",")):
                print(json.dumps(measure(root.resolve(), args.seconds, Path(cache), nice)), flush=True)


if __name__ == "__main__":
    main()
