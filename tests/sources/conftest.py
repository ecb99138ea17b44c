"""Real servers for the model-source tests, one of each per session: an HTTPS file server, moto's
S3 server with IAM authentication, go-containerregistry's OCI registry and olah (a Hugging Face
mirror, offline) behind HF_ENDPOINT. Sources are fetched in-process (no torch needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.https_server import FileServer, serve_files
from support.hub_mirror import HubMirror, hub_mirror
from support.oci_registry import Registry, oci_registry
from support.s3_server import S3Server, s3_server


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("source-servers")


@pytest.fixture(scope="session")
def https_files(servers_dir: Path) -> Iterator[FileServer]:
    root = servers_dir / "www"
    root.mkdir()
    with serve_files(root, servers_dir / "pki") as server:
        yield server


@pytest.fixture(scope="session")
def s3(servers_dir: Path) -> Iterator[S3Server]:
    with s3_server(servers_dir) as server:
        yield server


@pytest.fixture(scope="session")
def registry(servers_dir: Path) -> Iterator[Registry]:
    with oci_registry(servers_dir) as reg:
        yield reg


@pytest.fixture(scope="session")
def hub(servers_dir: Path) -> Iterator[HubMirror]:
    work = servers_dir / "hub"
    work.mkdir()
    with hub_mirror(work) as mirror:
        yield mirror


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch, hub: HubMirror) -> HubMirror:
    """The hub client allowed on the network (tests/worker's conftest turns it offline), aimed at olah."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return hub
