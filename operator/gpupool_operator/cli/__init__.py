"""The ``gpupool`` command line: one subcommand per module, each with ``register(subparsers)``.

Why a registry of modules: subcommands pull in very different dependencies (the local cluster
and its node builders, pydantic models and the placement engine, kopf), so a command imports only
its own module: ``gpupool plan ...`` never loads the demo, the simulator or the local cluster. The
other subcommands are listed by the one-line help in :data:`SUBCOMMANDS` (a test holds it to each
module's own), so ``gpupool --help`` imports none of them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gpupool_operator import __version__

#: Subcommand -> (the module under gpupool_operator.cli that defines it, its one-line help), in
#: help order.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "local": ("local", "a real local Kubernetes control plane with fake GPU node pools"),
    "plan": ("plan", "show where gpupool would place InferencePools on these nodes, and what it costs"),
    "simulate": ("simulate", "replay a request trace through gpupool's scaling policy and the usual autoscalers"),
    "demo": ("demo", "start the local cluster, run the operator, place the example pools, print the result"),
    "operator": ("run_operator", "run the gpupool operator (watches InferencePools and Nodes, places replicas)"),
}
#: The modules, in help order (every one defines one subcommand of :data:`SUBCOMMANDS`).
SUBCOMMAND_MODULES = tuple(module for module, _ in SUBCOMMANDS.values())


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``gpupool`` parser. Without ``argv`` every subcommand's module is imported; with the
    command line it will parse, only the module of the subcommand it names (the others are listed
    by their help line, and parse nothing)."""
    parser = argparse.ArgumentParser(
        prog="gpupool",
        description="Pack ML inference onto heterogeneous GPU, MIG and CPU pools at the lowest cost.",
    )
    parser.add_argument("--version", action="version", version=f"gpupool {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name, (module_name, help_) in SUBCOMMANDS.items():
        if wanted is not None and name != wanted:
            sub.add_parser(name, help=help_, add_help=False)
            continue
        try:
            module = importlib.import_module(f"gpupool_operator.cli.{module_name}")
        except ModuleNotFoundError as err:
            if err.name == f"gpupool_operator.cli.{module_name}":
                continue  # subcommand not part of this build yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
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
