"""Request traces: arrival times and per-request work, parsed from CSV text.

**Format.** A CSV file with a header row. One time column:

* ``TIMESTAMP``: a date and time, ``YYYY-MM-DD HH:MM:SS[.fffffff]`` (the Azure LLM inference
  traces use it), or
* ``time`` / ``seconds``: seconds as a number (``0``, ``1.25``), not negative.

Rows must be sorted by time. Optional work columns set how much each request costs relative to
the trace's average request (so a replica's ``inferencesPerSecond`` is per average request of the
trace): ``work`` (a positive number), else ``ContextTokens`` plus ``GeneratedTokens`` (Azure's
columns), each normalised to a mean of 1. Without any, every request is one unit. Other columns
are ignored. Time starts at the first request (t = 0).

Parsing is pure (lines in, :class:`Trace` out); a bad row raises :class:`TraceError` naming the
source, the row number (the header is row 1, as a spreadsheet counts) and the field.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

__all__ = ["Trace", "TraceError", "parse_csv"]

TIME_COLUMNS = ("TIMESTAMP", "time", "seconds")
TOKEN_COLUMNS = ("ContextTokens", "GeneratedTokens")


class TraceError(ValueError):
    """A trace that cannot be used; the message names the source and the row or field."""


@dataclass(frozen=True, slots=True)
class Trace:
    """Arrival times (seconds from the first request, sorted) and per-request work (mean 1)."""

    name: str
    times: tuple[float, ...]
    work: tuple[float, ...]
    #: Where the requests came from and its licence, shown beside any result (``None``: generated).
    attribution: str | None = None

    def __post_init__(self) -> None:
        if len(self.times) != len(self.work):
            raise TraceError(f"{self.name}: {len(self.times)} times but {len(self.work)} work values")

    @property
    def duration(self) -> float:
        """Seconds from the first arrival to the last (at least 1)."""
        return max(1.0, self.times[-1]) if self.times else 0.0

    def __len__(self) -> int:
        return len(self.times)

    def window(self, start: float, length: float | None) -> Trace:
        """The requests in ``[start, start + length)``, re-based to start at 0."""
        end = math.inf if length is None else start + length
        pairs = [(t - start, w) for t, w in zip(self.times, self.work, strict=True) if start <= t < end]
        if not pairs:
            raise TraceError(f"{self.name}: no requests between {start:g} s and {end:g} s")
        return Trace(self.name, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), self.attribution)


def parse_csv(lines: Iterable[str], source: str, work: str = "auto", attribution: str | None = None) -> Trace:
    """Parse a trace (see the module docstring). ``work``: ``auto`` (columns if present),
    ``tokens`` (require the token columns), ``unit`` (every request one unit)."""
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise TraceError(f"{source}: empty file (expected a header row and at least one request)") from None
    except csv.Error as err:
        raise TraceError(f"{source}: row 1: not CSV: {err}") from None
    names = [h.strip().lstrip("\ufeff") for h in header]
    time_col = next((names.index(c) for c in TIME_COLUMNS if c in names), None)
    if time_col is None:
        raise TraceError(f"{source}: row 1: no time column (expected one of {', '.join(TIME_COLUMNS)}; "
                         f"found {', '.join(names) or 'none'})")
    work_cols = _work_columns(names, work, source)
    dated = names[time_col] == "TIMESTAMP"
    times: list[float] = []
    raw_work: list[float] = []
    first: datetime | None = None
    row = 1
    try:
        for row, fields in enumerate(reader, start=2):
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) < len(names):
                raise TraceError(f"{source}: row {row}: {len(fields)} fields, the header has {len(names)}")
            text = fields[time_col].strip()
            if dated:
                stamp = _stamp(text, source, row, names[time_col])
                first = first or stamp
                t = (stamp - first).total_seconds()
                if t < 0:
                    raise TraceError(f"{source}: row {row}: {names[time_col]}: {text} is before the first "
                                     "request: rows must be sorted by time")
            else:
                t = _number(text, source, row, names[time_col])
                if t < 0:
                    raise TraceError(f"{source}: row {row}: {names[time_col]}: negative time {text}")
            if times and t < times[-1]:
                raise TraceError(f"{source}: row {row}: {names[time_col]}: {text} is earlier than the row "
                                 "before: rows must be sorted by time")
            times.append(t)
            raw_work.append(_row_work(fields, work_cols, names, source, row))
    except csv.Error as err:
        raise TraceError(f"{source}: row {row}: not CSV: {err}") from None
    if not times:
        raise TraceError(f"{source}: no requests (only a header)")
    if not dated and times[0] > 0:
        times = [t - times[0] for t in times]
    mean = sum(raw_work) / len(raw_work)
    normalised = tuple(w / mean for w in raw_work) if mean > 0 else tuple(1.0 for _ in raw_work)
    return Trace(source, tuple(times), normalised, attribution)


def _work_columns(names: list[str], work: str, source: str) -> list[int]:
    if work == "unit":
        return []
    if "work" in names and work in ("auto", "work"):
        return [names.index("work")]
    tokens = [names.index(c) for c in TOKEN_COLUMNS if c in names]
    if work == "tokens" and not tokens:
        raise TraceError(f"{source}: row 1: --work tokens needs a {' or '.join(TOKEN_COLUMNS)} column")
    if work not in ("auto", "tokens", "work", "unit"):
        raise TraceError(f"{source}: unknown work mode {work!r} (auto, tokens, unit)")
    return tokens


def _row_work(fields: list[str], cols: list[int], names: list[str], source: str, row: int) -> float:
    if not cols:
        return 1.0
    total = 0.0
    for c in cols:
        value = _number(fields[c].strip(), source, row, names[c])
        if value < 0:
            raise TraceError(f"{source}: row {row}: {names[c]}: negative value {fields[c].strip()}")
        total += value
    return total


def _number(text: str, source: str, row: int, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{source}: row {row}: {field}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceError(f"{source}: row {row}: {field}: {text!r} is not a finite number")
    return value


def _stamp(text: str, source: str, row: int, field: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise TraceError(f"{source}: row {row}: {field}: {text!r} is not a time such as "
                         "2023-11-16 18:17:03.9799600") from None
