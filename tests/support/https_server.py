"""A real HTTPS file server for the model-source tests: TLS from a throwaway CA, ``Range``
requests, an optional bearer token, and a fault switch that cuts a response off part-way (what a
flaky network does to a large download) so the resume path is exercised for real."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gpupool_operator.local.pki import Pki, ensure_pki

__all__ = ["FileServer", "serve_files"]


@dataclass
class FileServer:
    root: Path
    port: int
    pki: Pki
    token: str | None = None
    cut_after: dict[str, int] = field(default_factory=dict)
    """path -> bytes after which the next GET of that path drops the connection (once)."""
    requests: list[tuple[str, str]] = field(default_factory=list)

    def url(self, rel: str) -> str:
        return f"https://localhost:{self.port}/{rel}"


def _handler(state: FileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _file(self) -> Path | None:
            rel = self.path.split("?", 1)[0].lstrip("/")
            state.requests.append((self.command, f"{rel} {self.headers.get('Range', '')}".strip()))
            if state.token is not None and self.headers.get("Authorization") != f"Bearer {state.token}":
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            path = (state.root / rel).resolve()
            if not path.is_file() or state.root.resolve() not in path.parents:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            return path

        def do_HEAD(self) -> None:
            path = self._file()
            if path is None:
                return
            self.send_response(200)
            self.send_header("Content-Length", str(path.stat().st_size))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def do_GET(self) -> None:
            path = self._file()
            if path is None:
                return
            data = path.read_bytes()
            start = 0
            rng = self.headers.get("Range", "")
            if rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            rel = self.path.lstrip("/")
            cut = state.cut_after.pop(rel, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return
            self.wfile.write(body)

    return Handler


@contextlib.contextmanager
def serve_files(root: Path, pki_dir: Path, *, token: str | None = None) -> Iterator[FileServer]:
    """Serve ``root`` over HTTPS on a free loopback port until the block ends."""
    import ssl

    pki = ensure_pki(pki_dir)
    state = FileServer(root, 0, pki, token)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki.cert), str(pki.key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    state.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, name="test-https", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
