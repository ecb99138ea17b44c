"""Write a benchmark's result as JSON and Markdown under benchmarks/results/, with its command."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def _invocation() -> list[str]:
    """How the benchmark was started, as a command that runs it again from the repository root:
    ``-m benchmarks.x.y`` for a module run (whose ``sys.argv[0]`` is its absolute file path), else
    the script's path relative to the repository."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name:
        return ["-m", spec.name.removesuffix(".__main__"), *sys.argv[1:]]
    script = Path(sys.argv[0]).resolve()
    root = RESULTS.parents[1]
    rel = script.relative_to(root) if script.is_relative_to(root) else script
    return [str(rel), *sys.argv[1:]]


def write(name: str, data: dict[str, Any], markdown: str) -> Path:
    """Store ``data`` (plus the command and machine) as ``<name>.json`` and ``<name>.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "PYTHONPATH=operator:worker:proto python " + shlex.join(_invocation())
    record = {
        "benchmark": name,
        "command": command,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **data,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    md = f"# {name}\n\nCommand: `{command}`  \nRecorded: {record['recorded_at']} on {record['machine']}\n\n{markdown}\n"
    path = RESULTS / f"{name}.md"
    path.write_text(md)
    return path
