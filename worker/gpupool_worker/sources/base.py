"""What every source fetcher provides: a listing (for the size check before any download) and a
download into a staging directory that returns the entry's manifest."""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpupool_worker.sources.cache import Manifest
from gpupool_worker.sources.credentials import Credentials
from gpupool_worker.sources.download import Progress, RetryPolicy
from gpupool_worker.sources.uri import SourceURI

__all__ = ["Fetcher", "Listing", "RemoteFile", "watch_directory"]


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file of a source: where it lands in the model directory, and what the source says it is."""

    path: str
    size: int | None
    sha256: str | None = None
    handle: str = ""
    """Transport detail (an S3 key, a blob digest)."""


@dataclass(frozen=True, slots=True)
class Listing:
    revision: str
    files: Sequence[RemoteFile]

    @property
    def total_bytes(self) -> int | None:
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)


class Fetcher(abc.ABC):
    """A source that is downloaded into the node's cache (hf, s3, https, oci)."""

    def __init__(self, uri: SourceURI, credentials: Credentials, *, policy: RetryPolicy) -> None:
        self.uri = uri
        self.credentials = credentials
        self.policy = policy

    @abc.abstractmethod
    def listing(self) -> Listing:
        """Ask the source what it holds (network; raises SourceError for not found / refused)."""

    @abc.abstractmethod
    def download(self, listing: Listing, staged: Path, progress: Progress) -> Manifest:
        """Download ``listing`` into ``staged`` with its checks; the manifest of what is there."""


@contextlib.contextmanager
def watch_directory(root: Path, progress: Progress, every_s: float = 2.0) -> Iterator[None]:
    """Report the bytes under ``root`` while a library we do not drive byte by byte (the hub
    client, ORAS) downloads into it; stops when the block ends."""
    stop = threading.Event()

    def size() -> int:
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())

    def loop() -> None:
        while not stop.wait(every_s):
            with contextlib.suppress(OSError):
                now = size()
                progress.add(now - progress.done)

    thread = threading.Thread(target=loop, name="gpupool-fetch-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every_s + 1)


Reporter = Callable[[str], None]
