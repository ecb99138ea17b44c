"""The ``gpupool`` command line: one subcommand per module, each with ``register(subparsers)``.

Why a registry of modules: subcommands pull in very different dependencies (the local cluster
needs nothing but the stdlib, the operator needs kopf), so each module is imported only when its
subcommand exists in this installation and is cheap to import.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gpupool_operator import __version__

#: Modules under gpupool_operator.cli that contribute subcommands, in help order.
SUBCOMMAND_MODULES = ("local", "plan", "simulate", "demo", "run_operator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpupool",
        description="Pack ML inference onto heterogeneous GPU, MIG and CPU pools at the lowest cost.",
    )
    parser.add_argument("--version", action="version", version=f"gpupool {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"gpupool_operator.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"gpupool_operator.cli.{name}":
                continue  # subcommand not part of this build yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gpupool ... | head`: the reader left; that is not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
