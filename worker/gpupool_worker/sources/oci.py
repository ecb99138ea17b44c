"""oci:// sources: OCI artifacts as ORAS pushes them (one layer per file, titled by annotation).

The ``oras`` package speaks the registry protocol (manifest, token and basic auth); this module
adds what a model cache needs on top: the layer sizes from the manifest for the size check before
any download, every blob checked against its sha256 digest, downloads that resume with ``Range``,
and directory layers (tar+gzip) unpacked. Login comes from the credentials Secret (``username``/
``password`` or ``.dockerconfigjson``), never from the node's Docker config. Registries on the
loopback address are spoken to over plain HTTP, as Docker does; every other registry over HTTPS.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from gpupool_worker.sources.archive import unpack
from gpupool_worker.sources.base import Fetcher, Listing, RemoteFile
from gpupool_worker.sources.cache import Manifest, scan_files
from gpupool_worker.sources.download import Progress, download
from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["OciFetcher"]

TITLE = "org.opencontainers.image.title"
UNPACK = "io.deis.oras.content.unpack"
DIR_MEDIA_TYPES = ("application/vnd.oci.image.layer.v1.tar+gzip",)  # a directory (oras-py; the ORAS CLI also annotates)
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
TIMEOUT_S = 30.0


def _loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class OciFetcher(Fetcher):
    _client: Any = None

    @property
    def target(self) -> str:
        ref = self.uri.revision
        sep = "@" if ref.startswith("sha256:") else ":"
        return f"{self.uri.location}/{self.uri.path}{sep}{ref}"

    @property
    def client(self) -> Any:
        if self._client is None:
            import oras.client  # type: ignore[import-untyped, unused-ignore]

            client = oras.client.OrasClient(hostname=self.uri.location, insecure=_loopback(self.uri.location),
                                            tls_verify=self.credentials.ca_bundle() or True)
            client.auth._auth_config = {"auths": {}}  # never the node's ~/.docker/config.json
            login = self.credentials.registry_login(self.uri.location)
            if login is not None:
                client.auth.set_basic_auth(*login)
            self._client = client
        return self._client

    def _request(self, url: str, headers: dict[str, str], *, stream: bool = False) -> Any:
        """One request with ORAS's authentication handshake (token or basic), without its
        minutes-long retry loop: our download retries, and a refusal must come back at once."""
        import requests

        client = self.client
        try:
            rsp = client.session.request("GET", url, headers=headers, stream=stream, timeout=TIMEOUT_S,
                                         verify=client._tls_verify)
            if rsp.status_code in (401, 403):
                headers, changed = client.auth.authenticate_request(rsp, dict(headers))
                if changed:
                    rsp = client.session.request("GET", url, headers=headers, stream=stream, timeout=TIMEOUT_S,
                                                 verify=client._tls_verify)
        except requests.exceptions.SSLError as exc:
            raise SourceError(Reason.FETCH_FAILED, f"{self.uri.display}: TLS: {exc}") from None
        except requests.exceptions.RequestException as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        if rsp.status_code in (401, 403):
            who = "anonymously (no credentials Secret)" if self.credentials.registry_login(self.uri.location) \
                is None else f"with the login in {self.credentials.origin}"
            raise SourceError(Reason.CREDENTIALS, f"{self.uri.display}: the registry refused access "
                              f"(HTTP {rsp.status_code}) {who}")
        if rsp.status_code == 404:
            raise SourceError(Reason.NOT_FOUND, f"{self.uri.display}: not found in {self.uri.location} "
                              f"({_errors(rsp)})")
        if rsp.status_code >= 500:
            raise ConnectionError(f"HTTP {rsp.status_code} from {url}")
        if rsp.status_code >= 400:
            raise SourceError(Reason.FETCH_FAILED, f"{self.uri.display}: HTTP {rsp.status_code} {_errors(rsp)}")
        return rsp

    def listing(self) -> Listing:
        container = self.client.get_container(self.target)
        url = f"{self.client.prefix}://{container.manifest_url()}"
        try:
            manifest = self._request(url, {"Accept": ", ".join(MANIFEST_TYPES)}).json()
        except ConnectionError as exc:
            raise SourceError(Reason.FETCH_FAILED, f"{self.uri.display}: {exc}") from None
        except ValueError as exc:
            raise SourceError(Reason.FORMAT_MISMATCH, f"{self.uri.display}: the manifest is not JSON: {exc}") from None
        layers = manifest.get("layers")
        if not isinstance(layers, list) or not layers:
            kind = manifest.get("mediaType", "unknown")
            raise SourceError(Reason.FORMAT_MISMATCH, f"{self.uri.display}: manifest ({kind}) has no layers; "
                              "push the model's files as an ORAS artifact (`oras push host/repo:tag model.onnx`)")
        files: list[RemoteFile] = []
        for layer in layers:
            title = (layer.get("annotations") or {}).get(TITLE)
            if not title:
                raise SourceError(Reason.FORMAT_MISMATCH, f"{self.uri.display}: layer {layer.get('digest')} has no "
                                  f"{TITLE} annotation: this looks like a container image, not an ORAS artifact")
            path = PurePosixPath(title)
            if path.is_absolute() or ".." in path.parts:
                raise SourceError(Reason.FORMAT_MISMATCH, f"{self.uri.display}: layer title {title!r} is unsafe")
            unpack_it = layer.get("mediaType") in DIR_MEDIA_TYPES or \
                (layer.get("annotations") or {}).get(UNPACK) == "true"
            digest = str(layer["digest"])
            if not digest.startswith("sha256:"):
                raise SourceError(Reason.FORMAT_MISMATCH, f"{self.uri.display}: layer digest {digest} is not sha256")
            if any(f.path == str(path) for f in files):
                raise SourceError(Reason.FORMAT_MISMATCH, f"{self.uri.display}: two layers are titled {title!r} (push "
                                  "folders as folders: `oras push host/repo:tag config.json 1_Pooling/`)")
            files.append(RemoteFile(str(path), int(layer["size"]), digest.removeprefix("sha256:"),
                                    "dir" if unpack_it else "file"))
        return Listing(self.uri.revision, files)

    def _opener(self, digest: str) -> Any:
        container = self.client.get_container(self.target)
        url = f"{self.client.prefix}://{container.get_blob_url('sha256:' + digest)}"

        @contextlib.contextmanager
        def open_at(offset: int) -> Iterator[tuple[int, Iterable[bytes]]]:
            rsp = self._request(url, {"Range": f"bytes={offset}-"} if offset else {}, stream=True)
            with rsp:
                start = offset if rsp.status_code == 206 else 0
                yield start, rsp.iter_content(chunk_size=1 << 20)

        return open_at

    def download(self, listing: Listing, staged: Path, progress: Progress) -> Manifest:
        digests: dict[str, str] = {}
        for remote in listing.files:
            assert remote.sha256 is not None
            target = staged / (".layers/" + remote.sha256 if remote.handle == "dir" else remote.path)
            digests[remote.path] = download(target, self._opener(remote.sha256), size=remote.size,
                                            sha256=remote.sha256, what=f"{self.uri.display} ({remote.path})",
                                            progress=progress, policy=self.policy)
        for remote in listing.files:
            if remote.handle == "dir":
                assert remote.sha256 is not None
                blob = staged / ".layers" / remote.sha256
                archive = blob.rename(blob.with_name(blob.name + ".tar.gz"))
                unpack(archive, staged / remote.path, self.uri.display)
                archive.unlink()
        with contextlib.suppress(OSError):
            (staged / ".layers").rmdir()
        return Manifest(self.uri.raw, listing.revision, scan_files(staged), digests)


def _errors(rsp: Any) -> str:
    try:
        errors = rsp.json().get("errors", [])
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or rsp.reason
    except ValueError:
        return str(rsp.reason)
