"""Trace parsing (the documented CSV format, the Azure files as they are) and seeded generators."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpupool_operator.sim.generators import diurnal, from_spec, onoff, poisson
from gpupool_operator.sim.trace import TraceError, parse_csv

AZURE_HEAD = Path(__file__).parent / "data" / "azure-llm-2023-code-head400.csv"


def test_the_azure_format_parses_as_is() -> None:
    with AZURE_HEAD.open() as f:
        t = parse_csv(f, AZURE_HEAD.name)
    assert len(t) == 400
    assert t.times[0] == 0.0
    # 18:17:03.9799600 -> 18:17:04.0319600 is 0.052 s
    assert t.times[1] == pytest.approx(0.052)
    assert t.duration == pytest.approx(225.10605)
    assert sum(t.work) / len(t.work) == pytest.approx(1.0)
    # the first request: 4808 + 10 tokens against the head's mean
    assert t.work[0] > 1.0


def test_numeric_seconds_and_an_explicit_work_column() -> None:
    t = parse_csv(["time,work", "5,1", "5.5,3", "7,0"], "x.csv")
    assert t.times == (0.0, 0.5, 2.0)
    assert t.work == (0.75, 2.25, 0.0)
    assert parse_csv(["time,work", "0,1", "1,3"], "x.csv", work="unit").work == (1.0, 1.0)


@pytest.mark.parametrize(("lines", "message"), [
    ([], "x.csv: empty file"),
    (["TIMESTAMP"], "x.csv: no requests"),
    (["when,ContextTokens"], "x.csv: row 1: no time column"),
    (["time", "1", "0.5"], "x.csv: row 3: time: 0.5 is earlier than the row before"),
    (["time", "-1"], "x.csv: row 2: time: negative time -1"),
    (["time", "abc"], "x.csv: row 2: time: 'abc' is not a number"),
    (["time", "nan"], "x.csv: row 2: time: 'nan' is not a finite number"),
    (["TIMESTAMP,ContextTokens,GeneratedTokens", "2023-11-16 18:17:03.9,1,1", "yesterday,1,1"],
     "x.csv: row 3: TIMESTAMP: 'yesterday' is not a time"),
    (["TIMESTAMP,ContextTokens,GeneratedTokens", "2023-11-16 18:17:03.9,1,1", "2023-11-16 18:17:01.0,1,1"],
     "x.csv: row 3: TIMESTAMP: 2023-11-16 18:17:01.0 is before the first request"),
    (["time,ContextTokens", "0,-5"], "x.csv: row 2: ContextTokens: negative value -5"),
    (["time,ContextTokens", "0"], "x.csv: row 2: 1 fields, the header has 2"),
])
def test_bad_traces_name_the_file_and_the_row(lines: list[str], message: str) -> None:
    with pytest.raises(TraceError) as err:
        parse_csv(lines, "x.csv")
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_token_work_requires_the_columns() -> None:
    with pytest.raises(TraceError, match="needs a ContextTokens or GeneratedTokens column"):
        parse_csv(["time", "0"], "x.csv", work="tokens")


def test_generators_are_deterministic_per_seed_and_have_their_rates() -> None:
    a, b, c = poisson(5.0, 600.0, seed=3), poisson(5.0, 600.0, seed=3), poisson(5.0, 600.0, seed=4)
    assert a.times == b.times
    assert a.times != c.times
    assert 2700 < len(a) < 3300  # 5/s for 600 s
    d = diurnal(5.0, 3600.0, period=3600.0, amplitude=0.8, seed=1)
    first_half = sum(1 for t in d.times if t < 1800)
    assert first_half > 2 * (len(d) - first_half)  # the sine's peak is in the first half
    o = onoff(20.0, 3600.0, on=20.0, off=100.0, seed=1)
    busy_seconds = {int(t) for t in o.times}
    assert len(busy_seconds) < 0.3 * 3600  # mostly off


@pytest.mark.parametrize(("spec", "message"), [
    ("weibull:rate=1", "unknown generator 'weibull'"),
    ("poisson:rate", "expected key=value"),
    ("poisson:rate=x", "rate: 'x' is not a number"),
    ("poisson:rate=0", "rate: must be a positive number"),
    ("poisson:rate=1,burst=2", "unexpected keyword argument 'burst'"),
])
def test_bad_generator_specs(spec: str, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        from_spec(spec)


def test_a_spec_builds_the_same_trace_as_the_call() -> None:
    assert from_spec("poisson:rate=2,duration=100,seed=7").times == poisson(2.0, 100.0, seed=7).times
