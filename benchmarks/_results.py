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


def write(name: str, data: dict[str, Any], markdown: str) -> Path:
    """Store ``data`` (plus the command and machine) as ``<name>.json`` and ``<name>.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "PYTHONPATH=operator:worker:proto python " + shlex.join(sys.argv)
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
