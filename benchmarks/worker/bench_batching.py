"""Dynamic batching gain: the same worker and MiniLM model with batching off (max_batch_size 1)
and on, under the same concurrent load. Goal: >= 3x throughput.

    PYTHONPATH=operator:worker:proto python -m benchmarks.worker.bench_batching
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._results import write
from benchmarks.worker._harness import SENTENCE, closed_loop, start_gpupool, text_inputs
from gpupool_worker.engine.models.examples import write_minilm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    for mbs in (int(b) for b in args.batch_sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp)
            write_minilm(repo / "minilm", max_batch_size=mbs, max_queue_delay_us=args.max_queue_delay_us)
            server = start_gpupool(repo, threads=args.threads)
            try:
                r = asyncio.run(closed_loop(server.url, "minilm", lambda: text_inputs([SENTENCE]),
                                            concurrency=args.concurrency, seconds=args.seconds))
            finally:
                server.stop()
        r["max_batch_size"] = mbs
        print(r)
        runs.append(r)
    load_after = os.getloadavg()
    base = runs[0]["throughput_rps"]
    lines = [f"MiniLM (eager fp32, CPU, {args.threads} torch threads), {args.concurrency} concurrent clients, "
             f"one sentence per request, max_queue_delay={args.max_queue_delay_us} us. "
             f"Load average before / after: {load_before[0]:.1f} / {load_after[0]:.1f} (2 CPUs, shared).", "",
             "| max_batch_size | req/s | gain vs batch 1 | p50 ms | p99 ms | cost per inference vs batch 1 |",
             "|---|---|---|---|---|---|"]
    for r in runs:
        gain = r["throughput_rps"] / base
        lines.append(f"| {r['max_batch_size']} | {r['throughput_rps']:.1f} | {gain:.2f}x | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {1 / gain:.2f}x |")
    lines += ["", "Cost per inference is busy time x price x share split over a batch's rows, so it falls "
              "as 1/throughput when the device stays busy."]
    write("worker-batching", {"runs": runs, "settings": vars(args),
                              "load_average": {"before": load_before, "after": load_after},
                              "best_gain": max(r["throughput_rps"] for r in runs) / base}, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
