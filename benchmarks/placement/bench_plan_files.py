"""``gpupool plan`` from files at fleet scale: 5,000 nodes and 10,000 replicas, YAML and JSON.

Run: ``PYTHONPATH=operator:worker:proto python benchmarks/placement/bench_plan_files.py [--nodes N --replicas R]``

Writes the inputs once (``kubectl get nodes -o yaml``-shaped Node List, the same as JSON, and
InferencePool manifests totalling ``--replicas`` replicas), then runs each of these as its own
process, best of ``--repeat``, and records wall time and peak resident memory (``ru_maxrss``):

* merely loading the files: ``yaml.load`` with the C loader (``CSafeLoader``), with PyYAML's
  pure-Python ``safe_load`` (what ``gpupool plan`` used to do), and ``json.load``;
* ``gpupool plan --nodes ... --pools ... -o json`` on the YAML and on the JSON nodes.

Goal (issue 16 item 11): the plan from YAML in at most 2x the time of merely loading the same
files with the C loader, under 150 MB. Every process pays the interpreter's start; the plan's also
pays importing the CLI (pydantic, the API models, the kubernetes client's quantity parser).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from benchmarks._results import write  # noqa: E402

#: The fleet: examples/clusters/large-fleet.yaml's mix, scaled to ``--nodes``.
FLEET = [
    ("a100-40-mig", 0.10, {"gpu": "A100-40GB", "gpusPerNode": 8, "cpu": 96, "memoryGiB": 1152,
                           "mig": {"strategy": "mixed", "layout": {"3g.20gb": 1, "2g.10gb": 1, "1g.5gb": 2}}}),
    ("a100-80", 0.14, {"gpu": "A100-80GB", "gpusPerNode": 8, "cpu": 96, "memoryGiB": 1152}),
    ("a100-80-mig", 0.07, {"gpu": "A100-80GB", "gpusPerNode": 8, "cpu": 96, "memoryGiB": 1152,
                           "mig": {"strategy": "mixed", "layout": {"1g.10gb": 7}}}),
    ("h100", 0.21, {"gpu": "H100-80GB", "gpusPerNode": 8, "cpu": 192, "memoryGiB": 2048}),
    ("h100-spot", 0.07, {"gpu": "H100-80GB", "gpusPerNode": 8, "cpu": 192, "memoryGiB": 2048,
                         "priceTier": "spot", "pricePerGpuHour": 2.45}),
    ("h100-mig", 0.07, {"gpu": "H100-80GB", "gpusPerNode": 8, "cpu": 192, "memoryGiB": 2048,
                        "mig": {"strategy": "mixed", "layout": {"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2}}}),
    ("h100-nvl", 0.03, {"gpu": "H100-NVL-94GB", "gpusPerNode": 4, "cpu": 128, "memoryGiB": 1024}),
    ("h200", 0.10, {"gpu": "H200-141GB", "gpusPerNode": 8, "cpu": 192, "memoryGiB": 2048}),
    ("b200", 0.06, {"gpu": "B200-180GB", "gpusPerNode": 8, "cpu": 224, "memoryGiB": 4096,
                    "mig": {"strategy": "mixed", "layout": {"4g.90gb": 1, "3g.90gb": 1}}}),
    ("b200-whole", 0.02, {"gpu": "B200-180GB", "gpusPerNode": 8, "cpu": 224, "memoryGiB": 4096}),
    ("cpu", 0.13, {"cpu": 64, "memoryGiB": 256}),
]

#: Model kinds: (memory, hardware options, GPUs per replica).
KINDS: list[tuple[str, list[dict[str, Any]], int]] = [
    ("2Gi", [{"type": "MIG", "mig": {"minMemory": "4Gi"}}, {"type": "CPU", "cpu": {"cores": 8}}], 1),
    ("8Gi", [{"type": "MIG", "mig": {"profile": "1g.10gb"}}, {"type": "MIG", "mig": {"minMemory": "9Gi"}}], 1),
    ("30Gi", [{"type": "MIG", "mig": {"minMemory": "30Gi"}}, {"type": "GPU", "gpu": {"product": "A100-40GB"}}], 1),
    ("40Gi", [{"type": "GPU", "gpu": {"product": "A100-80GB"}}, {"type": "GPU", "gpu": {"product": "H100-80GB"}}], 1),
    ("70Gi", [{"type": "GPU", "gpu": {"product": "H100-80GB"}}, {"type": "GPU", "gpu": {"product": "H200-141GB"}}], 1),
    ("280Gi", [{"type": "GPU", "gpu": {"product": "H100-80GB"}}, {"type": "GPU", "gpu": {"product": "B200-180GB"}}], 4),
    ("1Gi", [{"type": "CPU", "cpu": {"cores": 4}}], 1),
]


def fleet(n: int) -> list[dict[str, Any]]:
    from gpupool_operator.local import nodes as fake_nodes
    from gpupool_operator.local.spec import parse

    pools = []
    left = n
    for i, (name, share, body) in enumerate(FLEET):
        count = left if i == len(FLEET) - 1 else max(1, round(n * share))
        left -= count
        pools.append({"name": name, "count": count, **body})
    return fake_nodes.build_nodes(parse({"name": "bench", "pools": pools}))


def pools(replicas: int, seed: int = 7) -> list[dict[str, Any]]:
    """InferencePool manifests (at most 32 models each) whose minReplicas add up to ``replicas``."""
    rng = random.Random(seed)
    counts: list[int] = []
    while sum(counts) < replicas:
        counts.append(min(replicas - sum(counts), rng.choice([1, 1, 2, 3, 5, 8, 13, 21, 40])))
    docs = []
    for p in range(0, len(counts), 32):
        models = []
        for j, n in enumerate(counts[p:p + 32]):
            memory, hardware, tp = KINDS[rng.randrange(len(KINDS))]
            model: dict[str, Any] = {
                "name": f"m{j}", "source": {"uri": f"hf://bench/model-{p + j}"}, "acceleratorMemory": memory,
                "hardware": hardware, "minReplicas": n, "maxReplicas": max(n, 1),
            }
            if tp > 1:
                model["gpusPerReplica"] = tp
            models.append(model)
        docs.append({"apiVersion": "gpupool.io/v1alpha1", "kind": "InferencePool",
                     "metadata": {"name": f"pool-{p // 32}", "namespace": f"team-{p // 32 % 7}"},
                     "spec": {"models": models}})
    return docs


LOADERS = {
    "yaml-c": "import yaml,sys\nfor f in sys.argv[1:]:\n list(yaml.load_all(open(f,'rb'),Loader=yaml.CSafeLoader))",
    "yaml-py": "import yaml,sys\nfor f in sys.argv[1:]:\n list(yaml.safe_load_all(open(f,'rb')))",
    "json": "import json,sys\nfor f in sys.argv[1:]:\n json.load(open(f,'rb'))",
}


def measure(cmd: list[str], repeat: int, env: dict[str, str]) -> tuple[float, float, float]:
    """Best CPU seconds (user + system), best wall seconds and the largest peak RSS (MiB) of
    ``repeat`` runs of ``cmd``, each its own process. CPU time is the figure to compare: on this
    shared machine wall time depends on what else runs."""
    best_cpu, best, peak = float("inf"), float("inf"), 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
        best_cpu = min(best_cpu, usage.ru_utime + usage.ru_stime)
        best = min(best, wall)
        peak = max(peak, usage.ru_maxrss / 1024)  # kilobytes on Linux
    return best_cpu, best, peak


def write_inputs(d: Path, nodes: int, replicas: int) -> None:
    """The input files (run in a process of its own: see :func:`main`)."""
    import yaml

    node_list = {"apiVersion": "v1", "kind": "List", "items": fleet(nodes), "metadata": {"resourceVersion": ""}}
    (d / "nodes.yaml").write_text(yaml.dump(node_list, Dumper=yaml.CSafeDumper, sort_keys=True))
    (d / "nodes.json").write_text(json.dumps(node_list, indent=4, sort_keys=True))
    manifests = pools(replicas)
    (d / "pools.yaml").write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    (d / "pools.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--replicas", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write-inputs", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write_inputs:
        write_inputs(args.write_inputs, args.nodes, args.replicas)
        return 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("operator", "worker", "proto"))}
    # This process stays small (stdlib only) and writes nothing big itself: a child's ru_maxrss
    # starts at its parent's size when it is forked, so a big parent would inflate every row.
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        subprocess.run([sys.executable, __file__, "--write-inputs", str(d), "--nodes", str(args.nodes),
                        "--replicas", str(args.replicas)], env=env, check=True)
        manifests = json.loads((d / "pools.json").read_text())["items"]
        sizes = {f: (d / f).stat().st_size / 2**20 for f in ("nodes.yaml", "nodes.json", "pools.yaml")}
        rows: dict[str, tuple[float, float, float]] = {}
        py = sys.executable
        yaml_files = [str(d / "nodes.yaml"), str(d / "pools.yaml")]
        json_files = [str(d / "nodes.json"), str(d / "pools.json")]
        rows["load YAML, C loader (yaml.CSafeLoader)"] = measure([py, "-c", LOADERS["yaml-c"], *yaml_files],
                                                                 args.repeat, env)
        rows["load YAML, pure-Python yaml.safe_load"] = measure([py, "-c", LOADERS["yaml-py"], *yaml_files],
                                                                1, env)
        rows["load JSON (json.load)"] = measure([py, "-c", LOADERS["json"], *json_files], args.repeat, env)
        plan = [py, "-m", "gpupool_operator", "plan", "-o", "json"]
        rows["gpupool plan, YAML files"] = measure(
            [*plan, "--nodes", yaml_files[0], "--pools", yaml_files[1]], args.repeat, env)
        rows["gpupool plan, JSON files"] = measure(
            [*plan, "--nodes", json_files[0], "--pools", json_files[1]], args.repeat, env)
        out = subprocess.run([*plan, "--nodes", json_files[0], "--pools", json_files[1]], env=env,
                             capture_output=True, check=True, text=True).stdout
        result = json.loads(out)
    c_load = rows["load YAML, C loader (yaml.CSafeLoader)"][0]
    json_load = rows["load JSON (json.load)"][0]
    plan_yaml, _, rss_yaml = rows["gpupool plan, YAML files"]
    plan_json, _, rss_json = rows["gpupool plan, JSON files"]
    placed = len(result["placements"])
    load = os.getloadavg()
    data = {
        "nodes": args.nodes, "replicas": args.replicas, "placed": placed,
        "models": sum(len(m["spec"]["models"]) for m in manifests), "file_mib": sizes,
        "rows": {k: {"cpu_s": c, "wall_s": w, "peak_rss_mib": m} for k, (c, w, m) in rows.items()},
        "plan_yaml_over_c_load_cpu": plan_yaml / c_load, "plan_json_over_json_load_cpu": plan_json / json_load,
        "goal_ratio": 2.0, "goal_rss_mib": 150, "repeat": args.repeat, "load_average_1_5_15": load,
        "bench_process_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    md = "\n".join([
        f"{args.nodes} nodes ({sizes['nodes.yaml']:.0f} MiB of YAML, {sizes['nodes.json']:.0f} MiB of JSON), "
        f"{data['models']} models with {args.replicas} replicas ({sizes['pools.yaml']:.1f} MiB of YAML); "
        f"{placed} replicas placed. Each row is its own process (interpreter start and imports included), "
        f"best of {args.repeat} (pure-Python YAML: one run); CPU time is user + system (wall time on this "
        "shared machine mostly measures the other work on it); peak RSS is ru_maxrss.",
        "",
        "| run | CPU time | wall | peak RSS |",
        "|---|---|---|---|",
        *[f"| {k} | {c:.2f} s | {w:.2f} s | {m:.0f} MiB |" for k, (c, w, m) in rows.items()],
        "",
        f"`gpupool plan` from YAML takes {plan_yaml / c_load:.2f}x the CPU time of merely loading the same files "
        f"with the C loader (goal: at most 2x) at {rss_yaml:.0f} MiB peak (goal: under 150 MB); from JSON "
        f"{plan_json / json_load:.2f}x json.load at {rss_json:.0f} MiB (json.load is fast, so there the "
        "solve and the imports dominate).",
        "",
        f"Machine load average when recorded (1/5/15 min, {os.cpu_count()} CPUs): "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.",
    ])
    path = write("placement-plan-files", data, md)
    print(md)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
