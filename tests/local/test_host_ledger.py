"""The host ledger that lets several local clusters run real nodes at once: the first cluster
records the host as it found it, a cluster that leaves while another still has real nodes restores
nothing they share, and the last one out restores everything. Runs anywhere (no root): the host
here is a directory standing in for /run, /proc/sys and a shared host path; the real-node tests
(test_real_concurrent.py) check the same on the real host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpupool_operator.local import realnodes
from gpupool_operator.local.cluster import LocalCluster


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    run = tmp_path / "run"
    run.mkdir()
    sysctls = tmp_path / "proc-sys"
    sysctls.mkdir()
    (sysctls / "kernel.panic").write_text("0\n")
    shared = tmp_path / "var-lib-kubelet"  # a host path the first node creates
    monkeypatch.setattr(realnodes, "HOST_LOCK", run)
    monkeypatch.setattr(realnodes, "RUN_ROOT", run / "gpupool")
    monkeypatch.setattr(realnodes, "HOST_LEDGER", run / "gpupool" / "host.json")
    monkeypatch.setattr(realnodes, "_sysctl_path", lambda name: sysctls / name)

    def snapshot() -> dict[str, Any]:
        return {"sysctls": {"kernel.panic": (sysctls / "kernel.panic").read_text().strip()},
                "paths": {str(p): p.exists() for p in (shared, run / "gpupool")}}

    monkeypatch.setattr(realnodes, "host_snapshot", snapshot)
    return {"tmp": tmp_path, "panic": sysctls / "kernel.panic", "shared": shared, "run": run / "gpupool"}


def _cluster(host: dict[str, Path], name: str) -> realnodes.RealNodes:
    return realnodes.RealNodes(LocalCluster(host["tmp"] / name))


def _join(nodes: realnodes.RealNodes, node: str) -> None:
    """What ``prepare_runtime`` does to the ledger and the node state (without starting anything)."""
    with realnodes.host_lock():
        nodes._join_host()
    nodes.state.nodes[node] = realnodes.NodeState(node, 1, nodes.cluster_id)
    nodes._save()


def _leave(nodes: realnodes.RealNodes) -> None:
    """What ``teardown`` does once its nodes are gone."""
    nodes.state.nodes.clear()
    nodes._save()
    nodes._restore_host()


def test_the_last_cluster_out_restores_what_the_first_found(host: dict[str, Path]) -> None:
    one, two = _cluster(host, "one"), _cluster(host, "two")
    assert one.cluster_id != two.cluster_id
    _join(one, "cpu-real-0")
    host["panic"].write_text("10\n")  # what one's kubelet does to the host
    host["shared"].mkdir()
    _join(two, "cpu-real-0")  # the same node name: its state is its own
    ledger = realnodes.read_ledger()
    assert set(ledger["clusters"]) == {one.cluster_id, two.cluster_id}
    assert ledger["before"]["sysctls"] == {"kernel.panic": "0"}  # not what one had changed

    _leave(one)  # two still runs: what they share stays
    assert host["panic"].read_text().strip() == "10"
    assert host["shared"].exists()
    assert set(realnodes.read_ledger()["clusters"]) == {two.cluster_id}

    _leave(two)  # the last one out: the host as one found it
    assert host["panic"].read_text().strip() == "0"
    assert not host["shared"].exists()
    assert not host["run"].exists()  # the ledger's own directory too
    one._restore_host()  # idempotent, and nothing left to restore
    two._restore_host()
    assert host["panic"].read_text().strip() == "0"


def test_a_cluster_that_never_started_real_nodes_restores_nothing_of_the_others(host: dict[str, Path]) -> None:
    running = _cluster(host, "running")
    _join(running, "cpu-real-0")
    host["panic"].write_text("10\n")
    host["shared"].mkdir()
    bystander = _cluster(host, "bystander")
    bystander.teardown()  # what `gpupool local down` of a cluster without real nodes runs
    assert host["panic"].read_text().strip() == "10"
    assert host["shared"].exists()
    assert set(realnodes.read_ledger()["clusters"]) == {running.cluster_id}


def test_a_cluster_whose_directory_is_gone_no_longer_holds_the_host(host: dict[str, Path]) -> None:
    import shutil

    gone, last = _cluster(host, "gone"), _cluster(host, "last")
    _join(gone, "cpu-real-0")
    host["panic"].write_text("10\n")
    _join(last, "cpu-real-0")
    shutil.rmtree(gone.cluster.directory)  # deleted without a teardown (a removed test directory)
    _leave(last)
    assert host["panic"].read_text().strip() == "0"
    assert not host["run"].exists()


def test_the_last_cluster_out_removes_only_what_real_nodes_left_in_a_host_path(host: dict[str, Path]) -> None:
    import socket

    last = _cluster(host, "last")
    _join(last, "cpu-real-0")
    shared = host["shared"]  # created meanwhile, as containerd's CNI use creates /var/lib/cni
    (shared / "results").mkdir(parents=True)
    (shared / "results" / f"gpupool-{last.cluster_id}-cpu-real-0-abc-eth0").write_text("{}")  # CNI result cache
    (shared / "logs").mkdir()
    (shared / "logs" / "web_default_web-abc.log").symlink_to(last.directory / "cpu-real-0" / "pod-logs" / "x.log")
    with socket.socket(socket.AF_UNIX) as sock:  # a shim's socket, its shim gone
        sock.bind(str(shared / "s"))
    (shared / "networks").mkdir()
    (shared / "networks" / "podman").write_text("another program's state")
    _leave(last)
    assert sorted(str(p.relative_to(shared)) for p in shared.rglob("*")) == ["networks", "networks/podman"]
    assert host["panic"].read_text().strip() == "0"


def test_a_cluster_directory_too_deep_for_the_kubelets_sockets_is_refused_before_anything_starts(
        tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / "cluster"
    nodes = realnodes.RealNodes(LocalCluster(deep), host=None)
    with pytest.raises(realnodes.RealNodeError, match=r"too deep for node cpu-real-0.*at most 107"):
        nodes.add("cpu-real-0")
    assert not nodes.directory.exists()  # nothing prepared, no node state written
