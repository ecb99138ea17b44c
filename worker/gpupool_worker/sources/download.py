"""Resumable downloads: retries that continue where the last attempt stopped, sizes and digests
checked, progress in the log.

Every transport (https, S3) gives an ``open_at(offset)`` that starts the file at a byte offset
(an HTTP ``Range``); a connection that drops mid-file is retried from the bytes already on disk,
with exponential backoff, up to ``retries`` times. A transport that cannot resume returns offset
0 and the file restarts. Permanent failures (not found, refused credentials) are raised by the
transport as :class:`SourceError` and never retried.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["Opener", "Progress", "RetryPolicy", "download", "human_bytes", "sha256_file"]

log = logging.getLogger(__name__)

Opener = Callable[[int], AbstractContextManager[tuple[int, Iterable[bytes]]]]
"""``open_at(offset)`` -> a context yielding (the offset the stream really starts at, its chunks)."""

TRANSIENT: tuple[type[BaseException], ...] = (OSError, EOFError, TimeoutError, ConnectionError)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def delay(self, attempt: int) -> float:
        return float(min(self.backoff_s * 2.0 ** attempt, self.max_backoff_s))


class Progress:
    """Bytes fetched for one source: a log line at most every ``every_s`` seconds, and a short
    status string handed to ``report`` (the model's LOADING reason on RepositoryIndex)."""

    def __init__(self, what: str, total: int | None, report: Callable[[str], None] | None = None,
                 *, every_s: float = 5.0) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self._report = report
        self._every_s = every_s
        self._started = time.monotonic()
        self._last = 0.0

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self._every_s:
            self._last = now
            self._emit(now)

    def _emit(self, now: float) -> None:
        rate = self.done / max(now - self._started, 1e-6)
        if self.total:
            text = (f"fetching {self.what}: {human_bytes(self.done)} of {human_bytes(self.total)} "
                    f"({100 * self.done / self.total:.0f}%, {human_bytes(rate)}/s)")
        else:
            text = f"fetching {self.what}: {human_bytes(self.done)} ({human_bytes(rate)}/s)"
        log.info("%s", text)
        if self._report is not None:
            self._report(text)

    def finish(self) -> float:
        seconds = time.monotonic() - self._started
        log.info("fetched %s: %s in %.1fs", self.what, human_bytes(self.done), seconds)
        return seconds


def _sha256_of(path: Path, upto: int) -> hashlib._Hash:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        remaining = upto
        while remaining > 0:
            block = fh.read(min(1 << 20, remaining))
            if not block:
                break
            digest.update(block)
            remaining -= len(block)
    return digest


def sha256_file(path: Path) -> str:
    return _sha256_of(path, path.stat().st_size).hexdigest()


def download(dest: Path, open_at: Opener, *, size: int | None, sha256: str | None, what: str,
             progress: Progress, policy: RetryPolicy = RetryPolicy()) -> str:
    """Download into ``dest`` (via ``dest.part``), resuming after dropped connections.

    Returns the file's sha256 (hex). ``size`` and ``sha256``, when known, are checked: a short or
    long file or a wrong digest is a ChecksumMismatch, never a file in the cache.
    """
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and (size is None or dest.stat().st_size == size):  # done by an earlier run
        existing = _sha256_of(dest, dest.stat().st_size).hexdigest()
        if sha256 is None or existing == sha256.lower():
            progress.add(dest.stat().st_size)
            return existing
        dest.unlink()
    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have > size:
            part.unlink()
            have = 0
        try:
            with open_at(have) as (start, chunks):
                if start != have:  # the server restarted the file: drop what we had
                    have = 0
                digest = _sha256_of(part, have) if have else hashlib.sha256()
                progress.add(have)
                with part.open("r+b" if have else "wb") as fh:
                    fh.seek(have)
                    fh.truncate()
                    for chunk in chunks:
                        fh.write(chunk)
                        digest.update(chunk)
                        progress.add(len(chunk))
            got = part.stat().st_size
            if size is not None and got < size:
                raise EOFError(f"stream ended at {got} of {size} bytes")
            break
        except SourceError:
            raise
        except TRANSIENT as exc:
            progress.done = 0
            if attempt >= policy.retries:
                raise SourceError(Reason.FETCH_FAILED, f"{what}: gave up after {attempt + 1} attempts: "
                                  f"{type(exc).__name__}: {exc}") from exc
            delay = policy.delay(attempt)
            attempt += 1
            log.warning("%s: attempt %d failed (%s: %s); resuming in %.1fs", what, attempt,
                        type(exc).__name__, exc, delay)
            time.sleep(delay)
    hexdigest = digest.hexdigest()
    if size is not None and got != size:
        part.unlink()
        raise SourceError(Reason.CHECKSUM_MISMATCH, f"{what}: {got} bytes, the source said {size}")
    if sha256 is not None and hexdigest != sha256.lower():
        part.unlink()
        raise SourceError(Reason.CHECKSUM_MISMATCH,
                          f"{what}: sha256 {hexdigest} does not match the expected {sha256.lower()}")
    part.replace(dest)
    return hexdigest
