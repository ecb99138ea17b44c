"""A real OCI registry for the oci:// tests: go-containerregistry's ``registry`` command (the
in-memory registry ggcr tests itself against), built once from the Go module proxy and cached by
version under ``$GPUPOOL_CACHE/bin/registry-<version>/`` the way the control plane is."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gpupool_operator.local import toolchain

__all__ = ["REGISTRY_VERSION", "Registry", "build_registry", "oci_registry"]

REGISTRY_VERSION = "v0.22.1"
PACKAGE = "github.com/google/go-containerregistry/cmd/registry"


def build_registry(version: str = REGISTRY_VERSION) -> Path:
    """The registry binary (built on first use; ToolchainError says what to do without Go)."""
    return toolchain._go_install("registry", PACKAGE, version, "registry") / "registry"


@dataclass
class Registry:
    host: str

    def push(self, repository: str, tag: str, files: list[Path], *, cwd: Path) -> str:
        """Push ``files`` (relative to ``cwd``) as an ORAS artifact with the ``oras`` client."""
        import oras.client

        client = oras.client.OrasClient(hostname=self.host, insecure=True)
        target = f"{self.host}/{repository}:{tag}"
        with contextlib.chdir(cwd):
            client.push(target, files=[str(f) for f in files], disable_path_validation=False)
        return target


@contextlib.contextmanager
def oci_registry(log_dir: Path) -> Iterator[Registry]:
    binary = build_registry()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    log = log_dir / f"registry-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(binary), "-port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{host}/v2/", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"registry did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield Registry(host)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
