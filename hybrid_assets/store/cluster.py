"""A replicated Weaviate cluster on one host: three real ``weaviate-server`` nodes on loopback.

What a multi-machine deployment runs (Weaviate's Helm chart, ``deploy/helm/weaviate-values.yaml``),
at the size of one host: every node is an ``EmbeddedServer`` with Weaviate's documented cluster
settings (``CLUSTER_HOSTNAME``, ``CLUSTER_GOSSIP_BIND_PORT``, ``CLUSTER_DATA_BIND_PORT``,
``CLUSTER_JOIN``, ``RAFT_JOIN``, ``RAFT_BOOTSTRAP_EXPECT``, ``RAFT_PORT``, ``RAFT_INTERNAL_RPC_PORT``,
``CLUSTER_IN_LOCALHOST`` because the nodes share one address) and the same loopback-only sockets
and ``/proc`` check as the embedded server. Point the project at it with ``WEAVIATE_URL`` (any node)
and ``HYBRID_WEAVIATE_REPLICATION_FACTOR=3``.

Ports, from a base HTTP port B and a base gRPC port G (defaults 8600 / 50600, away from the
embedded server's 8079 / 50059 and the tests' ports): node i (0, 1, 2) serves REST on B+i and gRPC on
G+i; its gossip port is B+100+10*i, cluster data +1, raft +2, raft internal RPC +3.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hybrid_assets.store.server import LOOPBACK, ClusterPlacement, EmbeddedServer, WeaviateUnavailable, is_ready

DEFAULT_HTTP_BASE = 8600
DEFAULT_GRPC_BASE = 50600
DEFAULT_NODES = 3


@dataclass(frozen=True)
class LocalCluster:
    binary: Path
    data_dir: Path  # one folder per node below it
    http_base: int = DEFAULT_HTTP_BASE
    grpc_base: int = DEFAULT_GRPC_BASE
    size: int = DEFAULT_NODES

    def gossip_port(self, index: int) -> int:
        return self.http_base + 100 + 10 * index

    @property
    def nodes(self) -> list[EmbeddedServer]:
        names = [f"node{i + 1}" for i in range(self.size)]
        raft_join = ",".join(f"{name}:{self.gossip_port(i) + 2}" for i, name in enumerate(names))
        # Every node's gossip address, its own included: a join succeeds when one member answers, so a
        # node can start first (it answers itself) and a restarted node finds whichever others are up.
        gossip_join = ",".join(f"{LOOPBACK}:{self.gossip_port(i)}" for i in range(self.size))
        return [
            EmbeddedServer(
                self.binary, self.data_dir / name, self.http_base + i, self.grpc_base + i,
                ClusterPlacement(name, self.gossip_port(i), gossip_join, raft_join, self.size),
            )
            for i, name in enumerate(names)
        ]

    def node(self, name: str) -> EmbeddedServer:
        return next(n for n in self.nodes if n.cluster.node_name == name)

    @property
    def url(self) -> str:
        """Any node answers for the whole cluster; the first is the one to give as WEAVIATE_URL."""
        return self.nodes[0].url

    @property
    def grpc_url(self) -> str:
        return f"http://{LOOPBACK}:{self.grpc_base}"

    def start(self, timeout: float = 180.0) -> str:
        """Start every node that is not running (all together: raft needs the expected voters), then
        wait until each is ready and the cluster sees all of them."""
        nodes = self.nodes
        launched = []
        for node in nodes:
            if node.is_ready():
                continue
            # one after the other, each once its gossip port is open, so the next one's join finds it
            launched.append((node, node.launch()))
            _wait_for_gossip(node, launched[-1][1], timeout)
        for node, process in launched:
            node.wait_until_ready(process, timeout)
        self.wait_for_members(len(nodes), timeout)
        return "started" if launched else "running"

    def start_node(self, name: str, timeout: float = 180.0) -> None:
        """(Re)start one node, e.g. after a fault; it rejoins with its data folder and name."""
        node = self.node(name)
        if not node.is_ready():
            process = node.launch()
            _wait_for_gossip(node, process, timeout)
            node.wait_until_ready(process, timeout)
        self.wait_for_members(self.size, timeout)

    def stop(self) -> list[str]:
        return [n.cluster.node_name for n in self.nodes if n.stop()]

    def kill_node(self, name: str) -> bool:
        return self.node(name).kill()

    def live_nodes(self) -> list[str]:
        return [n.cluster.node_name for n in self.nodes if n.is_ready()]

    def members(self, via: EmbeddedServer | None = None) -> dict[str, str]:
        """node name -> status (HEALTHY, UNAVAILABLE, ...) as a live node sees the cluster."""
        live = [via] if via else [n for n in self.nodes if n.is_ready()]
        for node in live:
            try:
                with urllib.request.urlopen(f"{node.url}/v1/nodes", timeout=5) as response:
                    return {n["name"]: n["status"] for n in json.load(response)["nodes"]}
            except OSError:
                continue
        return {}

    def raft_leader(self) -> str | None:
        """The node that leads the schema's raft group now (``/v1/cluster/statistics``), or None."""
        for node in (n for n in self.nodes if n.is_ready()):
            try:
                with urllib.request.urlopen(f"{node.url}/v1/cluster/statistics", timeout=5) as response:
                    statistics = json.load(response).get("statistics") or []
            except (OSError, ValueError):
                continue
            leaders = {s.get("leaderId") for s in statistics} - {None, ""}
            if len(leaders) == 1:
                return leaders.pop()
        return None

    def wait_for_members(self, count: int, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            members = self.members()
            if sum(status == "HEALTHY" for status in members.values()) >= count:
                return
            time.sleep(0.5)
        raise WeaviateUnavailable(f"the cluster did not reach {count} healthy nodes within {timeout:.0f}s: "
                                  f"{self.members() or 'no node answers'}")

    def status(self) -> dict:
        return {
            "url": self.url,
            "grpc_url": self.grpc_url,
            "data_dir": str(self.data_dir),
            "nodes": [{"name": n.cluster.node_name, "url": n.url, "grpc_port": n.grpc_port, "ready": is_ready(n.url),
                       "pid": n.pid(), "gossip_port": n.cluster.gossip_port} for n in self.nodes],
            "members": self.members(),
        }


def _wait_for_gossip(node: EmbeddedServer, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            node.wait_until_ready(process, 0)  # raises with the node's log
        try:
            with socket.create_connection((LOOPBACK, node.cluster.gossip_port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise WeaviateUnavailable(f"{node.cluster.node_name}: gossip port {node.cluster.gossip_port} not open "
                              f"within {timeout:.0f}s; log: {node.log_file}")
