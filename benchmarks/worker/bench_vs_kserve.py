"""gpupool-worker vs KServe's Python ModelServer on the same MiniLM model, same machine, same client.

Both servers run the same encoder code and weights (eager fp32 on the CPU, same torch threads);
one client process (tritonclient's asyncio gRPC client) drives each over loopback in a closed loop
at several concurrencies, one sentence per request. Goal: >= 2x throughput at equal or better p99.

    PYTHONPATH=operator:worker:proto python -m benchmarks.worker.bench_vs_kserve
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._results import write
from benchmarks.worker._harness import SENTENCE, closed_loop, start_gpupool, start_kserve, text_inputs
from gpupool_worker.engine.models.examples import write_minilm


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["throughput_rps"])
    return ordered[len(ordered) // 2] | {"rounds": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per level; the median is kept")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads for both servers")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    parser.add_argument("--engine", default="eager", choices=["eager", "compile"],
                        help="gpupool's engine (KServe always runs the encoder eagerly, as its "
                             "examples do); compile: torch.compile (inductor), still fp32")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    results: dict[str, list[dict[str, Any]]] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        write_minilm(repo / "minilm", max_batch_size=args.max_batch_size,
                     max_queue_delay_us=args.max_queue_delay_us, engine=args.engine, precision="fp32")
        # both servers up at once (the idle one costs ~nothing); rounds alternate between them so
        # that load from anything else on the machine falls on both alike
        servers = [start_gpupool(repo, threads=args.threads),
                   start_kserve(threads=args.threads, max_threads=4),   # ModelServer's default pool
                   start_kserve(threads=args.threads, max_threads=1)]   # no CPU oversubscription
        try:
            for c in levels:
                rounds: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
                for i in range(args.rounds):
                    for server in servers[i % len(servers):] + servers[: i % len(servers)]:
                        r = asyncio.run(closed_loop(server.url, "minilm", lambda: text_inputs([SENTENCE]),
                                                    concurrency=c, seconds=args.seconds))
                        print(server.name, r)
                        rounds[server.name].append(r)
                for name, runs in rounds.items():
                    results.setdefault(name, []).append(_median_run(runs))
        finally:
            for server in servers:
                server.stop()
    load_after = os.getloadavg()
    ours = results["gpupool-worker"]
    k4, k1 = results["kserve-modelserver(max_threads=4)"], results["kserve-modelserver(max_threads=1)"]
    theirs = [max(a, b, key=lambda r: r["throughput_rps"]) for a, b in zip(k4, k1, strict=True)]
    engines = ("eager fp32 in both servers" if args.engine == "eager" else
               "gpupool: torch.compile (inductor) fp32, KServe: eager fp32 (as its examples run it)")
    lines = [f"Same MiniLM encoder ({engines}, CPU), same weights, same client (tritonclient.grpc.aio), "
             f"loopback, one sentence per request, {args.threads} torch threads per server, "
             f"gpupool max_batch_size={args.max_batch_size}, max_queue_delay={args.max_queue_delay_us} us. "
             f"{args.rounds} interleaved rounds of {args.seconds:.0f} s per level; the median round is shown. "
             f"Load average before / after: {load_before[0]:.1f} / {load_after[0]:.1f} (2 CPUs, shared).", "",
             "| concurrency | gpupool req/s | kserve req/s (pool 4 / pool 1) | ratio vs best kserve | "
             "gpupool p50 / p99 ms | best kserve p50 / p99 ms |", "|---|---|---|---|---|---|"]
    comparison = []
    for a, b, b4, b1 in zip(ours, theirs, k4, k1, strict=True):
        ratio = a["throughput_rps"] / b["throughput_rps"] if b["throughput_rps"] else float("inf")
        comparison.append({"concurrency": a["concurrency"], "throughput_ratio": ratio,
                           "p99_ratio_kserve_over_gpupool": b["p99_ms"] / a["p99_ms"]})
        lines.append(f"| {a['concurrency']} | {a['throughput_rps']:.1f} | "
                     f"{b4['throughput_rps']:.1f} / {b1['throughput_rps']:.1f} | "
                     f"{ratio:.2f}x | {a['p50_ms']:.1f} / {a['p99_ms']:.1f} | {b['p50_ms']:.1f} / {b['p99_ms']:.1f} |")
    lines += ["", "KServe's ModelServer has no dynamic batching of its own: each request runs the encoder alone "
              "(its predict() is synchronous, as in KServe's examples). With ModelServer's default thread pool "
              "(4) several predicts run at once and oversubscribe the CPU; with a pool of 1 they run one at "
              "a time. Each level compares against whichever KServe setting did better. gpupool batches "
              "concurrent requests. "
              "The machine (2 vCPUs) was shared with other jobs during the run: compare within a row.", "",
              "At concurrency 1 there is nothing to batch: both servers run the encoder on one sentence "
              "at a time, so throughput is 1 / latency and the ratio is bounded by the compute both pay "
              + ("(the same eager encoder here: near 1x; the 2x goal is reachable only where batching has "
                 "requests to combine). " if args.engine == "eager" else
                 "(here gpupool's compiled encoder against KServe's eager one: the engine's own speed-up). ")
              + "gpupool's batcher pays no queue delay there: a request that finds the model idle, with no "
              "batch finished within the delay, runs at once."]
    suffix = "" if args.engine == "eager" else f"-{args.engine}"
    write(f"worker-vs-kserve-threads{args.threads}{suffix}", {"results": results, "comparison": comparison,
                               "load_average": {"before": load_before, "after": load_after},
                               "settings": vars(args)}, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
