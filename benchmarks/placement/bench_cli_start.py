"""How long ``gpupool <command> --help`` takes to start: every subcommand's module imported (how the
command started before its registry became lazy, still what ``cli.build_parser()`` without argv
does) against only the named command's module (``cli.main``), side by side in one run.

Run: ``PYTHONPATH=operator:worker:proto python benchmarks/placement/bench_cli_start.py [--runs 15]``

Each start is a fresh interpreter (``python -c``), timed as its CPU time (user + system, from
``wait4``: robust on a shared, loaded machine, unlike wall time) and its wall time; runs of the two
ways alternate, and the table shows medians and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from benchmarks._results import write  # noqa: E402

WAYS = {
    "every module imported (before)": (
        "import sys\nfrom gpupool_operator.cli import build_parser\n"
        "try:\n    build_parser().parse_args(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
    ),
    "only the command's module (now)": (
        "import sys\nfrom gpupool_operator.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
    ),
}


def start(code: str, argv: list[str]) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("operator", "worker", "proto"))}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, wall


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    commands = [["plan", "--help"], ["simulate", "--help"], ["--help"]]
    rows = []
    data: dict[str, dict[str, dict[str, float]]] = {}
    for argv in commands:
        label = "gpupool " + " ".join(argv)
        got: dict[str, list[tuple[float, float]]] = {w: [] for w in WAYS}
        start(WAYS["only the command's module (now)"], argv)  # warm the file cache
        for _ in range(args.runs):
            for way, code in WAYS.items():
                got[way].append(start(code, argv))
        med = {w: (statistics.median(c for c, _ in xs), statistics.median(t for _, t in xs)) for w, xs in got.items()}
        before, now = med["every module imported (before)"], med["only the command's module (now)"]
        data[label] = {w: {"cpu_s": m[0], "wall_s": m[1]} for w, m in med.items()}
        rows.append(f"| `{label}` | {before[0]:.2f} s ({before[1]:.2f} s) | {now[0]:.2f} s ({now[1]:.2f} s) "
                    f"| {now[0] / before[0]:.2f}x |")
    load = os.getloadavg()
    md = (
        f"Median of {args.runs} fresh interpreters per way and command, alternating; CPU time (user + system), "
        "wall time in brackets.\n\n"
        "| command | every module imported (before) | only the command's module (now) | CPU time, now / before |\n"
        "|---|---|---|---|\n" + "\n".join(rows) +
        f"\n\nMachine load average when recorded: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.\n"
    )
    print(md)
    write("placement-cli-start", {"runs": args.runs, "results": data, "load": load}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
