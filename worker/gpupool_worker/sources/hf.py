"""hf:// sources with huggingface_hub: a repository at a pinned revision.

The revision (``@rev`` in the uri or ``source.revision``, default ``main``) is resolved once to its
commit, and every file is downloaded at that commit, so a push to the branch mid-download cannot
mix two versions; the manifest records the commit. ``HF_ENDPOINT`` (a mirror, or a test server)
and ``HF_HUB_OFFLINE`` are honoured; the token is the Secret's ``HF_TOKEN`` or none at all.
Offline, a model missing from the node's cache is looked up in the Hugging Face cache
(``HF_HOME``) and refused with OfflineNotCached if it is not there either.

Only the files the pool's format needs are fetched (a repository often holds the same weights as
safetensors, PyTorch pickles, ONNX and TensorFlow); sizes come from the hub's listing and LFS
files are checked against their sha256.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import time
from pathlib import Path

from gpupool_worker.sources.base import Fetcher, Listing, RemoteFile, watch_directory
from gpupool_worker.sources.cache import Manifest
from gpupool_worker.sources.download import Progress, sha256_file
from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["FORMAT_FILES", "HfFetcher", "offline_snapshot", "select_files"]

log = logging.getLogger(__name__)

_COMMON = ("*.json", "*.txt", "*.model", "tokenizer*", "*.tiktoken", "labels*")
FORMAT_FILES: dict[str, tuple[str, ...]] = {
    "SafeTensors": (*_COMMON, "*.safetensors"),
    "ONNX": (*_COMMON, "*.onnx", "*.onnx_data", "*.onnx.data"),
    "TorchScript": (*_COMMON, "*.pt", "*.torchscript"),
    "TorchExport": (*_COMMON, "*.pt2"),
}
_NEVER = ("onnx/*", "openvino/*", "coreml/*", "*.h5", "*.msgpack", "*.ckpt", "*.gguf")


def select_files(names: list[str], model_format: str) -> list[str]:
    """The files of a repository a model of ``model_format`` needs (a pure function).

    ONNX exports often live under ``onnx/``: for format ONNX that folder is taken when the root
    has no ``.onnx`` file. Unknown formats take everything.
    """
    patterns = FORMAT_FILES.get(model_format)
    if patterns is None:
        return sorted(names)
    never: tuple[str, ...] = _NEVER
    if model_format == "ONNX" and not any(fnmatch.fnmatch(n, "*.onnx") and "/" not in n for n in names):
        never = tuple(p for p in _NEVER if p != "onnx/*")
    chosen = [n for n in names if any(fnmatch.fnmatch(n.rsplit("/", 1)[-1], p) for p in patterns)
              and not any(fnmatch.fnmatch(n, p) for p in never)]
    return sorted(chosen)


def _endpoint(fetcher: HfFetcher) -> str:
    from huggingface_hub import constants

    return (fetcher.credentials.get("HF_ENDPOINT") or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def offline_snapshot(repo_id: str, revision: str) -> Path | None:
    """The model in the Hugging Face cache (HF_HOME), without the network; None if absent."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        return None


class HfFetcher(Fetcher):
    model_format: str = ""

    @property
    def _token(self) -> str | bool:
        return self.credentials.get("HF_TOKEN", "token") or False

    def _error(self, exc: Exception) -> SourceError:
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        where = f"{self.uri.display} at {_endpoint(self)}"
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(exc, GatedRepoError):
            return SourceError(Reason.CREDENTIALS, f"{where}: the repository is gated and the token "
                               f"({self.credentials.origin}) has not been granted access")
        if isinstance(exc, RepositoryNotFoundError):
            if self.uri.revision != "main":
                where += f" (revision {self.uri.revision!r})"
            if self._token:
                return SourceError(Reason.CREDENTIALS, f"{where}: repository not found, or the HF_TOKEN in "
                                   f"{self.credentials.origin} does not grant access to it")
            return SourceError(Reason.NOT_FOUND, f"{where}: repository not found (if it is private or gated, "
                               "reference a credentials Secret with HF_TOKEN)")
        if isinstance(exc, RevisionNotFoundError):
            return SourceError(Reason.NOT_FOUND, f"{where}: revision {self.uri.revision!r} not found")
        if isinstance(exc, EntryNotFoundError):
            return SourceError(Reason.NOT_FOUND, f"{where}: {exc}")
        if isinstance(exc, HfHubHTTPError) and status in (401, 403):
            return SourceError(Reason.CREDENTIALS, f"{where}: HTTP {status}; the token from "
                               f"{self.credentials.origin} was refused")
        return SourceError(Reason.FETCH_FAILED, f"{where}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")

    def _permanent(self, exc: Exception) -> bool:
        from huggingface_hub.errors import HfHubHTTPError

        status = getattr(getattr(exc, "response", None), "status_code", None)
        return self._error(exc).reason is not Reason.FETCH_FAILED or (
            isinstance(exc, HfHubHTTPError) and status is not None and 400 <= status < 500 and status != 429)

    def listing(self) -> Listing:
        """The commit the revision names, then the files at that commit with their sizes (and LFS
        sha256): the tree listing carries sizes where a mirror's model info may not."""
        from huggingface_hub import HfApi

        api = HfApi(endpoint=_endpoint(self), token=self._token)
        try:
            commit = str(api.model_info(self.uri.location, revision=self.uri.revision).sha or self.uri.revision)
            entries = {e.path: e for e in api.list_repo_tree(self.uri.location, revision=commit, recursive=True)
                       if getattr(e, "size", None) is not None or hasattr(e, "lfs")}
        except Exception as exc:
            raise self._error(exc) from None
        chosen = select_files(list(entries), self.model_format)
        if not chosen:
            raise SourceError(Reason.FORMAT_MISMATCH, f"{self.uri.display}: no files for format {self.model_format} "
                              f"(the repository has: {', '.join(sorted(entries)[:20])})")
        files = []
        for name in chosen:
            entry = entries[name]
            lfs = getattr(entry, "lfs", None)
            sha = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
            files.append(RemoteFile(name, getattr(entry, "size", None), sha))
        return Listing(commit, files)

    def download(self, listing: Listing, staged: Path, progress: Progress) -> Manifest:
        from huggingface_hub import hf_hub_download

        digests: dict[str, str] = {}
        with watch_directory(staged, progress):
            for remote in listing.files:
                for attempt in range(self.policy.retries + 1):
                    try:
                        hf_hub_download(self.uri.location, remote.path, revision=listing.revision,
                                        local_dir=staged, token=self._token, endpoint=_endpoint(self))
                        break
                    except Exception as exc:
                        if self._permanent(exc) or attempt == self.policy.retries:
                            raise self._error(exc) from None
                        log.warning("%s: %s failed (%s); retrying", self.uri.display, remote.path, exc)
                        time.sleep(self.policy.delay(attempt))
                path = staged / remote.path
                size = path.stat().st_size
                if remote.size is not None and size != remote.size:
                    raise SourceError(Reason.CHECKSUM_MISMATCH, f"{self.uri.display}: {remote.path} is {size} "
                                      f"bytes, the hub lists {remote.size}")
                if remote.sha256:
                    got = sha256_file(path)
                    if got != remote.sha256:
                        path.unlink()
                        raise SourceError(Reason.CHECKSUM_MISMATCH, f"{self.uri.display}: {remote.path} has sha256 "
                                          f"{got}, the hub lists {remote.sha256}")
                    digests[remote.path] = got
        shutil.rmtree(staged / ".cache", ignore_errors=True)  # the hub client's own bookkeeping
        return Manifest(self.uri.raw, listing.revision,
                        {f.path: (staged / f.path).stat().st_size for f in listing.files}, digests)
