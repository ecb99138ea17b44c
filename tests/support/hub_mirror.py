"""A Hugging Face-compatible endpoint for the hf:// tests: olah (a self-hosted Hub mirror) in
offline mode, serving local git repositories. The worker reaches it the way it reaches any mirror,
through ``HF_ENDPOINT``, and huggingface_hub speaks the Hub's real API to it (model info, tree
listing, resolve downloads). olah lives in its own virtualenv (``scripts/olah_env.sh``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HubMirror", "hub_mirror"]

ROOT = Path(__file__).resolve().parents[2]


def olah_cli() -> Path:
    venv = Path(sys.prefix)
    out = subprocess.run(["bash", str(ROOT / "scripts" / "olah_env.sh"), str(venv)], check=True,
                         capture_output=True, text=True, timeout=900)
    return Path(out.stdout.strip())


def _git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "gpupool tests", "GIT_AUTHOR_EMAIL": "tests@gpupool.invalid",
           "GIT_COMMITTER_NAME": "gpupool tests", "GIT_COMMITTER_EMAIL": "tests@gpupool.invalid"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout.strip()


@dataclass
class HubMirror:
    endpoint: str
    mirrors: Path

    def publish(self, repo_id: str, directory: Path, *, branch: str = "main", message: str = "upload") -> str:
        """Commit ``directory``'s files as ``repo_id`` (a new commit on ``branch``); the commit sha."""
        repo = self.mirrors / "models" / repo_id
        if not (repo / ".git").exists():
            repo.mkdir(parents=True)
            _git("init", "-q", "-b", branch, cwd=repo)
        elif _git("branch", "--show-current", cwd=repo) != branch:
            _git("checkout", "-q", "-B", branch, cwd=repo)
        for item in repo.iterdir():
            if item.name != ".git":
                shutil.rmtree(item) if item.is_dir() else item.unlink()
        shutil.copytree(directory, repo, dirs_exist_ok=True)
        # git trusts its index's stat data: a file of the same size, copied with the same mtime onto
        # a reused inode, would look unchanged and keep the previous commit's blob. A fresh index
        # makes git hash every file.
        (repo / ".git" / "index").unlink(missing_ok=True)
        _git("add", "-A", ".", cwd=repo)
        _git("commit", "-q", "--allow-empty", "-m", message, cwd=repo)
        return _git("rev-parse", "HEAD", cwd=repo)


@contextlib.contextmanager
def hub_mirror(workdir: Path) -> Iterator[HubMirror]:
    cli = olah_cli()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    mirrors = workdir / "mirrors"
    (mirrors / "models").mkdir(parents=True, exist_ok=True)
    config = workdir / "olah.toml"
    config.write_text(f"""[basic]
host = "127.0.0.1"
port = {port}
mirror-netloc = "127.0.0.1:{port}"
mirror-lfs-netloc = "127.0.0.1:{port}"
mirrors-path = ["{mirrors}"]
repos-path = "{workdir / 'repos'}"
metadata-cache-ttl = 0
[accessibility]
offline = true
""")
    log = workdir / "olah.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(cli), "-c", str(config), "--log-path", str(workdir / "logs")],
                                cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/api/models/none/none/revision/main", timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # answering: up
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"olah did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        yield HubMirror(endpoint, mirrors)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
