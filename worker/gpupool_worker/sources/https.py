"""https:// sources: one file, or an archive unpacked, with an optional sha256 of what was sent.

Downloads resume with ``Range`` after a dropped connection (servers that ignore it restart the
file). The pool's ``source.sha256`` is checked against the bytes received (the archive itself,
for an archive). A ``ca.crt`` in the credentials Secret adds a private certificate authority.
"""

from __future__ import annotations

import base64
import contextlib
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from gpupool_worker.sources.archive import archive_kind, unpack
from gpupool_worker.sources.base import Fetcher, Listing, RemoteFile
from gpupool_worker.sources.cache import Manifest, scan_files
from gpupool_worker.sources.download import Progress, download
from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["HttpsFetcher"]

CHUNK = 1 << 20
TIMEOUT_S = 30.0


class HttpsFetcher(Fetcher):
    sha256: str | None = None

    @property
    def _name(self) -> str:
        name = unquote(PurePosixPath(urlsplit(self.uri.location).path).name)
        return name or "model"

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        ca = self.credentials.ca_bundle()
        if ca is not None:
            ctx.load_verify_locations(cafile=ca)
        return ctx

    def _headers(self) -> dict[str, str]:
        token = self.credentials.get("BEARER_TOKEN")
        if token:
            return {"Authorization": f"Bearer {token}"}
        user, password = self.credentials.get("username"), self.credentials.get("password")
        if user and password:
            return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
        return {}

    def _request(self, method: str, offset: int = 0) -> urllib.request.Request:
        headers = {"User-Agent": "gpupool-worker", **self._headers()}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        return urllib.request.Request(self.uri.location, method=method, headers=headers)

    def _refused(self, exc: urllib.error.HTTPError) -> SourceError | None:
        what = self.uri.display
        if exc.code in (401, 403):
            creds = "no credentials Secret was given" if not self._headers() else \
                f"the credentials in {self.credentials.origin} were refused"
            return SourceError(Reason.CREDENTIALS, f"{what}: HTTP {exc.code} {exc.reason} ({creds})")
        if exc.code in (404, 410):
            return SourceError(Reason.NOT_FOUND, f"{what}: HTTP {exc.code} {exc.reason}")
        if 400 <= exc.code < 500 and exc.code not in (408, 416, 429):
            return SourceError(Reason.FETCH_FAILED, f"{what}: HTTP {exc.code} {exc.reason}")
        return None

    def listing(self) -> Listing:
        size: int | None = None
        try:
            with urllib.request.urlopen(self._request("HEAD"), timeout=TIMEOUT_S, context=self._context()) as rsp:
                length = rsp.headers.get("Content-Length")
                size = int(length) if length and length.isdigit() else None
        except urllib.error.HTTPError as exc:
            refused = self._refused(exc)
            if refused is not None and exc.code != 405:
                raise refused from None
        except (urllib.error.URLError, OSError) as exc:
            raise SourceError(Reason.FETCH_FAILED, f"{self.uri.display}: {exc}") from None
        return Listing("", [RemoteFile(self._name, size, self.sha256)])

    @contextlib.contextmanager
    def _open_at(self, offset: int) -> Iterator[tuple[int, Iterable[bytes]]]:
        try:
            rsp = urllib.request.urlopen(self._request("GET", offset), timeout=TIMEOUT_S, context=self._context())
        except urllib.error.HTTPError as exc:
            refused = self._refused(exc)
            if refused is not None:
                raise refused from None
            raise
        with rsp:
            start = offset if rsp.status == 206 else 0

            def chunks() -> Iterator[bytes]:
                while block := rsp.read(CHUNK):
                    yield block

            yield start, chunks()

    def download(self, listing: Listing, staged: Path, progress: Progress) -> Manifest:
        remote = listing.files[0]
        kind = archive_kind(remote.path)
        target = staged / ".download" / remote.path if kind else staged / remote.path
        digest = download(target, self._open_at, size=remote.size, sha256=remote.sha256,
                          what=self.uri.display, progress=progress, policy=self.policy)
        if kind:
            unpack(target, staged, self.uri.display)
            target.unlink()
            (staged / ".download").rmdir()
        return Manifest(self.uri.raw, "", scan_files(staged), {remote.path: digest})
