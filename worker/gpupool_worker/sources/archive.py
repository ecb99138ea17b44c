"""Unpacking downloaded archives (tar, tar.gz, zip) safely: no path leaves the target directory,
no links or devices are created, and an archive holding one top-level folder is unpacked as that
folder's contents (``model.tar.gz`` -> ``minilm/config.json`` serves as ``config.json``)."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["archive_kind", "unpack"]

_KINDS = {".tar": "tar", ".tar.gz": "tar", ".tgz": "tar", ".tar.xz": "tar", ".tar.bz2": "tar", ".zip": "zip"}


def archive_kind(name: str) -> str | None:
    lowered = name.lower()
    for suffix, kind in _KINDS.items():
        if lowered.endswith(suffix):
            return kind
    return None


def _safe(name: str, what: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: archive member {name!r} would land outside the model")
    return path


def unpack(archive: Path, into: Path, what: str) -> None:
    """Unpack ``archive`` into ``into`` (which must be empty or missing)."""
    kind = archive_kind(archive.name)
    tmp = into.with_name(into.name + ".unpack")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if kind == "tar":
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    _safe(member.name, what)
                tar.extractall(tmp, filter="data")
        elif kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    _safe(name, what)
                zf.extractall(tmp)
        else:
            raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: {archive.name} is not a known archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: cannot unpack {archive.name}: {exc}") from None
    top = [p for p in tmp.iterdir() if not p.name.startswith(".")]
    root = top[0] if len(top) == 1 and top[0].is_dir() else tmp
    into.mkdir(parents=True, exist_ok=True)
    for item in root.iterdir():
        dest = into / item.name
        if dest.is_dir():  # left by an unpack that was interrupted
            shutil.rmtree(dest)
        shutil.move(str(item), dest)
    shutil.rmtree(tmp, ignore_errors=True)
