"""The ``gpupool`` command's registry: a command imports only its own module, and the help lines
that stand in for the other modules say exactly what those modules say."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpupool_operator.cli import SUBCOMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def _listed(parser: argparse.ArgumentParser) -> list[tuple[str, str | None]]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [(a.dest, a.help) for a in sub._choices_actions]


def test_the_help_lines_are_each_modules_own() -> None:
    full = _listed(build_parser())  # every module imported, each registering itself
    assert full == [(name, help_) for name, (_, help_) in SUBCOMMANDS.items()]
    for name in SUBCOMMANDS:
        assert _listed(build_parser([name])) == full
    assert _listed(build_parser([])) == full


def test_the_named_command_parses_as_before() -> None:
    args = ["plan", "--nodes", "n.yaml", "--pools", "p.yaml", "-o", "json"]
    assert vars(build_parser(args).parse_args(args)) == vars(build_parser().parse_args(args))


def _imported_by(*argv: str) -> set[str]:
    code = (
        "import json, sys\n"
        "from gpupool_operator.cli import main\n"
        "try:\n"
        f"    main({list(argv)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("operator", "worker", "proto"))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          check=True)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("command", ["plan", "simulate"])
def test_a_command_imports_only_its_own_module(command: str) -> None:
    loaded = _imported_by(command, "--help")
    module = SUBCOMMANDS[command][0]
    assert f"gpupool_operator.cli.{module}" in loaded
    others = {f"gpupool_operator.cli.{m}" for m, _ in SUBCOMMANDS.values()} - {f"gpupool_operator.cli.{module}"}
    assert not others & loaded, others & loaded
    assert "kopf" not in loaded
    assert "gpupool_operator.local.nodes" not in loaded


def test_the_bare_help_imports_no_subcommand() -> None:
    loaded = _imported_by("--help")
    assert not {f"gpupool_operator.cli.{m}" for m, _ in SUBCOMMANDS.values()} & loaded


def test_no_command_prints_the_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in SUBCOMMANDS)
