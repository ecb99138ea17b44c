"""Container images for real local nodes, written as docker archives and imported without a registry.

Two images, both tiny and built here from files on this machine (no registry can be reached):

- ``gpupool.local/pause``: the sandbox image, one static pause binary (``toolchain.build_pause``).
- ``gpupool.local/worker``: the fast-loop worker image. Its layer holds only the merged-``/usr``
  symlinks, ``/tmp``, a passwd file and a ``gpupool-worker`` launcher; the Python runtime, the
  project's virtualenv and the checkout are bind-mounted read-only into every container by the
  node's runtime spec (``realnodes.base_runtime_spec``), the way NVIDIA's container runtime mounts
  the driver's libraries. Why not the project's real image: it carries torch (several GB), and
  importing it into each node's containerd takes minutes per change of the code; with the
  environment mounted, a code change reaches the next pod at once and the image is a few KB. The
  worker still runs in its own container (rootfs, namespaces, cgroup, network), so probes,
  restarts, graceful deletion and logs are the kubelet's own.

The tag carries a hash of the mounted paths, so a different venv gets a different image.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PAUSE_IMAGE = "gpupool.local/pause:3.10"


@dataclass(frozen=True)
class HostRuntime:
    """The host paths a worker container gets read-only, and how it starts the worker."""

    venv: Path
    python_prefix: Path
    checkout: Path

    @property
    def pythonpath(self) -> str:
        return ":".join(str(self.checkout / d) for d in ("operator", "worker", "proto"))

    def mounts(self) -> list[Path]:
        """Every host path a container needs, besides /usr: deduplicated, none inside another."""
        out: list[Path] = []
        for p in sorted({Path("/usr"), self.python_prefix, self.venv, self.checkout}, key=lambda x: len(x.parts)):
            if not any(p == q or q in p.parents for q in out):
                out.append(p)
        return out

    @property
    def tag(self) -> str:
        digest = hashlib.sha256("\n".join(map(str, self.mounts())).encode()).hexdigest()[:12]
        return f"gpupool.local/worker:{digest}"


def _add(tar: tarfile.TarFile, name: str, *, data: bytes | None = None, mode: int = 0o644,
         link: str | None = None, directory: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
        tar.addfile(info)
    elif directory:
        info.type, info.mode = tarfile.DIRTYPE, mode
        tar.addfile(info)
    else:
        payload = data or b""
        info.size, info.mode = len(payload), mode
        tar.addfile(info, io.BytesIO(payload))


def docker_archive(out: Path, tag: str, files: Iterable[tuple[str, dict[str, object]]],
                   entrypoint: list[str], env: list[str]) -> Path:
    """Write a one-layer docker-archive (what ``ctr images import`` reads) to ``out``."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for name, kw in files:
            _add(tar, name, **kw)  # type: ignore[arg-type]
    layer_bytes = layer.getvalue()
    layer_digest = hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": env, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created_by": "gpupool_operator.local.images"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [f"{layer_digest}/layer.tar"]}]
    out.parent.mkdir(parents=True, exist_ok=True)
    # written beside and renamed into place: another local cluster may be importing ``out`` now
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with tarfile.open(tmp, "w") as tar:
        _add(tar, f"{layer_digest}/", directory=True, mode=0o755)
        _add(tar, f"{layer_digest}/layer.tar", data=layer_bytes)
        _add(tar, config_name, data=config_bytes)
        _add(tar, "manifest.json", data=json.dumps(manifest).encode())
    tmp.replace(out)
    return out


def pause_archive(out: Path, pause_binary: Path) -> Path:
    return docker_archive(out, PAUSE_IMAGE, [("pause", {"data": pause_binary.read_bytes(), "mode": 0o755})],
                          ["/pause"], [])


def worker_archive(out: Path, host: HostRuntime) -> Path:
    launcher = (
        "#!/bin/sh\n"
        "# the gpupool worker, from the project's virtualenv mounted read-only by the node's runtime\n"
        f'exec {host.venv}/bin/python -m gpupool_worker "$@"\n'
    ).encode()
    files: list[tuple[str, dict[str, object]]] = [
        ("bin", {"link": "usr/bin"}),
        ("sbin", {"link": "usr/sbin"}),
        ("lib", {"link": "usr/lib"}),
        ("lib64", {"link": "usr/lib64"}),
        ("tmp/", {"directory": True, "mode": 0o1777}),
        ("etc/", {"directory": True, "mode": 0o755}),
        ("etc/passwd", {"data": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"}),
        ("etc/group", {"data": b"root:x:0:\nnogroup:x:65534:\n"}),
        ("gpupool/", {"directory": True, "mode": 0o755}),
        ("gpupool/bin/", {"directory": True, "mode": 0o755}),
        ("gpupool/bin/gpupool-worker", {"data": launcher, "mode": 0o755}),
        ("home/", {"directory": True, "mode": 0o1777}),
    ]
    env = [
        "PATH=/gpupool/bin:/usr/local/bin:/usr/bin:/bin",
        f"PYTHONPATH={host.pythonpath}",
        "HOME=/home",
        "PYTHONDONTWRITEBYTECODE=1",
        "GPUPOOL_LOCAL_IMAGE=1",
    ]
    return docker_archive(out, host.tag, files, ["/gpupool/bin/gpupool-worker"], env)
