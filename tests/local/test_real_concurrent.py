"""Two local clusters with real kubelet nodes on one host at once (CI beside the demo, or two test
sessions): each gets its own bridge and /24, cgroups, containerd and kubelet state and ports, even
with the same node name in both; tearing one down leaves the other's pods running untouched, and
the last one to go puts the host back as it was before the first one started.

Needs root and the node binaries (``gpupool local build --nodes``); skipped with what is missing
named otherwise.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support.polling import wait_until

from gpupool_operator.local import realnodes, toolchain
from gpupool_operator.local.cluster import LocalCluster, _alive

pytestmark = [pytest.mark.real_nodes, pytest.mark.cluster]

NODE = "cpu-real-0"  # the same name in both clusters, as two runs of one cluster spec have
POD = "web"
#: sysctls the kubelet sets at start (to the first value); the test starts from the second, so
#: "restored" is not vacuous on a host that already carries the kubelet's values
KUBELET_SYSCTLS = {"kernel.panic": ("10", "0"), "kernel.panic_on_oops": ("1", "0")}


@contextlib.contextmanager
def _sysctls_unlike_the_kubelets() -> Iterator[None]:
    paths = {name: Path("/proc/sys") / name.replace(".", "/") for name in KUBELET_SYSCTLS}
    saved = {name: path.read_text().strip() for name, path in paths.items()}
    try:
        for name, (kubelet, other) in KUBELET_SYSCTLS.items():
            if saved[name] == kubelet:
                paths[name].write_text(other)
        yield
    finally:
        for name, value in saved.items():
            paths[name].write_text(value)



def _wait(what: str, check: Callable[[], Any], timeout_s: float = 120, every: float = 0.5,
          why: Callable[[], str] | None = None) -> Any:
    return wait_until(what, check, timeout_s, every, why)


def _web_pod(nodes: realnodes.RealNodes, tag: str) -> dict[str, Any]:
    """A pod that answers HTTP with its cluster's tag (the worker image's mounted Python)."""
    script = f"mkdir -p /tmp/www && echo {tag} > /tmp/www/id && exec {nodes.host.venv}/bin/python -m http.server " \
             "8080 --bind 0.0.0.0 --directory /tmp/www"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD, "namespace": "default"},
            "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "web", "image": nodes.host.tag, "imagePullPolicy": "Never", "command": ["sh", "-c", script],
                "readinessProbe": {"httpGet": {"path": "/id", "port": 8080}, "periodSeconds": 1}}]}}


def _pod(cluster: LocalCluster) -> dict[str, Any]:
    proc = cluster.kubectl("get", "pod", POD, "-n", "default", "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def _ready_ip(cluster: LocalCluster) -> str:
    pod = _pod(cluster)
    conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return str(pod["status"].get("podIP", "")) if conds.get("Ready") == "True" else ""


def _answer(ip: str) -> str:
    with urllib.request.urlopen(f"http://{ip}:8080/id", timeout=5) as rsp:
        return str(rsp.read().decode().strip())


def _sandboxes(nodes: realnodes.RealNodes) -> list[str]:
    return sorted(nodes.crictl(NODE, "pods", "-q", "--label", f"io.kubernetes.pod.name={POD}").stdout.split())


def test_two_clusters_run_real_nodes_at_once_and_tear_down_apart(tmp_path_factory: pytest.TempPathFactory) -> None:
    missing = realnodes.prerequisites()
    if missing:
        pytest.skip("real nodes cannot run here: missing " + "; ".join(missing))
    binaries = toolchain.ensure_node_binaries()
    # a short directory: this test's own name as tmp_path puts the kubelet's sockets past 107 bytes
    with _sysctls_unlike_the_kubelets():
        _two_clusters(tmp_path_factory.mktemp("two"), binaries)


def _two_clusters(tmp_path: Path, binaries: toolchain.NodeBinaries) -> None:
    before = realnodes.host_snapshot()
    clusters = {tag: LocalCluster(tmp_path / tag) for tag in ("one", "two")}
    nodes: dict[str, realnodes.RealNodes] = {}
    pids: dict[str, list[int]] = {}
    try:
        with ThreadPoolExecutor(2) as pool:  # both control planes, then both nodes, at the same time
            list(pool.map(lambda c: c.start(), clusters.values()))
            nodes = {tag: realnodes.RealNodes(c, binaries) for tag, c in clusters.items()}
            list(pool.map(lambda n: n.add(NODE), nodes.values()))
        one, two = nodes["one"].state.nodes[NODE], nodes["two"].state.nodes[NODE]
        # every host-side name of a node differs between the clusters, although the node's name does not
        assert one.bridge != two.bridge
        assert one.subnet != two.subnet
        assert one.cgroup_root != two.cgroup_root
        assert nodes["one"].cluster_run_dir != nodes["two"].cluster_run_dir
        assert set(one.ports.values()).isdisjoint(two.ports.values())
        assert set(realnodes.read_ledger()["clusters"]) == {nodes["one"].cluster_id, nodes["two"].cluster_id}
        during = realnodes.host_snapshot()
        # what "restored" below is checked against is really changed meanwhile (not a vacuous check)
        assert {n: during["sysctls"][n] for n in KUBELET_SYSCTLS} == {n: v[0] for n, v in KUBELET_SYSCTLS.items()}
        assert {one.bridge, two.bridge} <= set(during["bridges"])
        assert len(during["mounts"]) > len(before["mounts"])  # each kubelet's root dir, bound shared
        assert during["paths"][str(realnodes.RUN_ROOT)]

        for tag, cluster in clusters.items():
            cluster.kubectl("apply", "-f", "-", input=json.dumps(_web_pod(nodes[tag], tag)))
        ips: dict[str, str] = {}
        for tag, c in clusters.items():
            ips[tag] = _wait(f"the pod of cluster {tag} to be Ready", lambda c=c: _ready_ip(c), 120,  # type: ignore[misc]
                             why=lambda c=c: str(c.kubectl("describe", "pod", POD, "-n", "default").stdout[-2000:]))  # type: ignore[misc]
        assert {tag: _answer(ip) for tag, ip in ips.items()} == {"one": "one", "two": "two"}
        # with the pods running: the bridge plugin's CNI ADD has set what it sets (net.ipv4.ip_forward,
        # 0 on a fresh machine before the first pod)
        running = realnodes.host_snapshot()
        assert ips["one"].startswith(f"{realnodes.SUBNET_BASE}.{one.index}.")
        assert ips["two"].startswith(f"{realnodes.SUBNET_BASE}.{two.index}.")
        pids = {tag: [*clusters[tag].state.pids.values(),
                      *(pid for node in n.state.nodes.values() for pid in node.pids.values())]
                for tag, n in nodes.items()}
        kept = _pod(clusters["two"])
        kept_sandboxes = _sandboxes(nodes["two"])
        assert len(kept_sandboxes) == 1

        # cluster one goes; cluster two's node, pod, sandbox, bridge, rule and cgroups stay as they were
        nodes["one"].teardown()
        clusters["one"].stop()
        host = realnodes.host_snapshot()
        assert one.bridge not in host["bridges"]
        assert two.bridge in host["bridges"]
        assert not any(one.bridge in r for r in host["forward_rules"])
        assert any(two.bridge in r for r in host["forward_rules"])
        assert not any(one.cgroup_root in c for c in host["cgroups"])
        assert any(c.endswith(two.cgroup_root) for c in host["cgroups"])
        assert set(realnodes.read_ledger()["clusters"]) == {nodes["two"].cluster_id}
        # what both shared (sysctls, host paths) stays as it was while both ran their pods
        assert (host["sysctls"], host["paths"]) == (running["sysctls"], running["paths"])
        time.sleep(15)  # longer than the kubelet's sync period: a kubelet that lost its pod would have acted
        assert _ready_ip(clusters["two"]) == ips["two"]
        assert _answer(ips["two"]) == "two"
        pod = _pod(clusters["two"])
        assert pod["metadata"]["uid"] == kept["metadata"]["uid"]
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
        assert _sandboxes(nodes["two"]) == kept_sandboxes
        events = clusters["two"].kubectl("get", "events", "-n", "default", "-o", "json").stdout
        assert not [e for e in json.loads(events)["items"] if e.get("reason") in ("SandboxChanged", "Killing")]
        assert not nodes["one"].state.nodes
        assert not [pid for pid in pids["one"] if _alive(pid)]  # cluster one's processes gone, by PID
        assert all(_alive(pid) for pid in pids["two"])  # cluster two's all still there
    finally:
        for tag in ("one", "two"):
            if tag in nodes:
                nodes[tag].teardown()
            clusters[tag].stop()
    # the last cluster out restored what the first one found
    assert realnodes.host_snapshot() == before
    assert not realnodes.HOST_LEDGER.exists()
    assert not any(n.shim_pids() for n in nodes.values())
    assert not [pid for tag in pids for pid in pids[tag] if _alive(pid)]  # everything both started is gone
