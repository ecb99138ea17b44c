"""gpupool-worker vs KServe's Python ModelServer on the same MiniLM model, same machine, same client.

Both servers run the same encoder code and weights (eager fp32 on the CPU, same torch threads);
one client process (tritonclient's asyncio gRPC client) drives each over loopback in a closed loop
at several concurrencies, one sentence per request. Goal: >= 2x throughput at equal or better p99.

    PYTHONPATH=operator:worker:proto python -m benchmarks.worker.bench_vs_kserve
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._results import write
from benchmarks.worker._harness import SENTENCE, closed_loop, start_gpupool, start_kserve, text_inputs
from gpupool_worker.engine.models.examples import write_minilm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads for both servers")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        write_minilm(repo / "minilm", max_batch_size=args.max_batch_size,
                     max_queue_delay_us=args.max_queue_delay_us)
        for starter in (lambda: start_gpupool(repo, threads=args.threads),
                        lambda: start_kserve(threads=args.threads)):
            server = starter()
            try:
                runs = []
                for c in levels:
                    r = asyncio.run(closed_loop(server.url, "minilm", lambda: text_inputs([SENTENCE]),
                                                concurrency=c, seconds=args.seconds))
                    print(server.name, r)
                    runs.append(r)
                results[server.name] = runs
            finally:
                server.stop()
    ours, theirs = results["gpupool-worker"], results["kserve-modelserver"]
    lines = ["Same MiniLM encoder (eager fp32, CPU), same weights, same client (tritonclient.grpc.aio), "
             f"loopback, one sentence per request, {args.threads} torch threads per server, "
             f"gpupool max_batch_size={args.max_batch_size}, max_queue_delay={args.max_queue_delay_us} us.", "",
             "| concurrency | gpupool req/s | kserve req/s | throughput ratio | gpupool p50 / p99 ms | "
             "kserve p50 / p99 ms |", "|---|---|---|---|---|---|"]
    comparison = []
    for a, b in zip(ours, theirs, strict=True):
        ratio = a["throughput_rps"] / b["throughput_rps"] if b["throughput_rps"] else float("inf")
        comparison.append({"concurrency": a["concurrency"], "throughput_ratio": ratio,
                           "p99_ratio_kserve_over_gpupool": b["p99_ms"] / a["p99_ms"]})
        lines.append(f"| {a['concurrency']} | {a['throughput_rps']:.1f} | {b['throughput_rps']:.1f} | "
                     f"{ratio:.2f}x | {a['p50_ms']:.1f} / {a['p99_ms']:.1f} | {b['p50_ms']:.1f} / {b['p99_ms']:.1f} |")
    lines += ["", "KServe's ModelServer has no dynamic batching of its own: each request runs the encoder alone "
              "(its predict() is synchronous, as in KServe's examples). gpupool batches concurrent requests."]
    write("worker-vs-kserve", {"results": results, "comparison": comparison,
                               "settings": vars(args)}, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
