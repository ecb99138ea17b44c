"""The node's model cache: each source fetched once, published atomically, checked on every hit.

```
<root>/<scheme>/<name>-<hash>/          a complete entry: the model's files and
    .gpupool-source.json                its manifest (uri, revision, every file's size, digests)
<root>/.partial/<name>-<hash>/          a fetch in progress (kept across restarts: downloads resume)
<root>/.locks/<name>-<hash>.lock        held by the one worker fetching that source
```

Several workers on one node share the root (a hostPath): the lock makes the second wait for the
first instead of downloading again, and an entry becomes visible only by ``rename`` once every file
is complete and checked, so a worker killed mid-download never leaves a half entry that a later one
would serve. A hit re-checks every file's size (cheap) and a missing or truncated file drops the
entry, which is then fetched again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gpupool_worker.sources.errors import Reason, SourceError
from gpupool_worker.sources.uri import SourceURI

__all__ = ["MANIFEST", "Manifest", "ModelCache", "scan_files"]

log = logging.getLogger(__name__)
MANIFEST = ".gpupool-source.json"


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a cache entry holds: enough to check it without the network."""

    uri: str
    revision: str = ""
    files: Mapping[str, int] = field(default_factory=dict)
    sha256: Mapping[str, str] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    def to_json(self) -> str:
        return json.dumps({"uri": self.uri, "revision": self.revision, "files": dict(self.files),
                           "sha256": dict(self.sha256)}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        return cls(str(data["uri"]), str(data.get("revision", "")),
                   {str(k): int(v) for k, v in data["files"].items()},
                   {str(k): str(v) for k, v in data.get("sha256", {}).items()})


def scan_files(root: Path) -> dict[str, int]:
    """Every regular file under ``root`` (relative POSIX path -> size), the manifest excluded."""
    out: dict[str, int] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            out[path.relative_to(root).as_posix()] = path.stat().st_size
    return out


class ModelCache:
    """A cache directory shared by the workers of one node."""

    def __init__(self, root: Path, *, lock_timeout_s: float = 3600.0) -> None:
        self.root = root
        self.lock_timeout_s = lock_timeout_s

    @staticmethod
    def key(uri: SourceURI, scope: str = "") -> str:
        """``<scheme>/<readable name>-<hash of the parsed source, revision and scope>``: one entry per
        pinned source, however its uri was spelled (``oci://r/m:1`` and ``oci://r/m`` with revision
        1). ``scope`` is the credentials' fingerprint: a pool whose Secret differs (or is wrong) never
        reads another pool's download from the node cache, it fetches (and is checked) itself."""
        canonical = f"{uri.scheme}\n{uri.location}\n{uri.path}\n{uri.revision}\n{scope}"
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{uri.location}_{uri.path}".strip("_"))[-80:]
        return f"{uri.scheme}/{readable}-{digest}"

    def entry(self, key: str) -> Path:
        return self.root / key

    def staging(self, key: str) -> Path:
        """The in-progress directory for ``key`` (created); only the lock holder writes it."""
        path = self.root / ".partial" / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def lookup(self, key: str) -> Manifest | None:
        """The entry's manifest if every file it lists is there at its size, else None (and a
        damaged entry is removed so the caller fetches it again)."""
        entry = self.entry(key)
        try:
            manifest = Manifest.from_json((entry / MANIFEST).read_text())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("model cache: unreadable manifest in %s (%s); fetching again", entry, exc)
            self._drop(entry)
            return None
        for rel, size in manifest.files.items():
            try:
                actual = (entry / rel).stat().st_size
            except FileNotFoundError:
                actual = -1
            if actual != size:
                log.warning("model cache: %s/%s is %s, manifest says %d bytes; fetching again", entry, rel,
                            "missing" if actual < 0 else f"{actual} bytes", size)
                self._drop(entry)
                return None
        return manifest

    def publish(self, key: str, staged: Path, manifest: Manifest) -> Path:
        """Make ``staged`` the entry for ``key`` (atomic rename) with ``manifest`` written in it."""
        (staged / MANIFEST).write_text(manifest.to_json())
        entry = self.entry(key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        if entry.exists():
            self._drop(entry)
        os.replace(staged, entry)
        return entry

    @contextlib.contextmanager
    def locked(self, key: str, *, what: str) -> Iterator[None]:
        """Hold the node-wide lock of ``key``; waits (bounded, logging) while another worker holds it."""
        lock_path = self.root / ".locks" / (key.replace("/", "_") + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        next_note = 0.0
        with open(lock_path, "a") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                now = time.monotonic()
                if now >= deadline:
                    raise SourceError(Reason.FETCH_FAILED, f"{what}: another worker on this node has held the "
                                      f"cache lock {lock_path} for over {self.lock_timeout_s:.0f}s")
                if now >= next_note:
                    log.info("model cache: another worker on this node is fetching %s; waiting", what)
                    next_note = now + 30
                time.sleep(0.5)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @staticmethod
    def _drop(path: Path) -> None:
        trash = path.with_name(f".{path.name}.drop-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
