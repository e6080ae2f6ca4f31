"""Start, find, and stop the embedded Weaviate server (a real weaviate-server binary on loopback).

The binary is built once from the Go module proxy by ``scripts/install_weaviate.sh`` into the user
cache (outside the repo) and reused. The server runs detached in its own process session so that it
outlives a CLI call or a Dagster run; a pid file under the data dir lets ``stop`` find it again.

Every socket the server opens is bound to 127.0.0.1: REST by ``--host``, gossip/raft by the cluster
bind settings, gRPC and the cluster data port by ``WEAVIATE_LISTEN_HOST`` (our build patch, see the
install script), and the Go profiler (upstream: ``*:6060``) is switched off.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hybrid_assets.settings import PROJECT_ROOT, Settings, env_value

INSTALL_SCRIPT = PROJECT_ROOT / "scripts" / "install_weaviate.sh"
LISTEN_PATCH = PROJECT_ROOT / "scripts" / "weaviate" / "listen-host.patch"
LOOPBACK = "127.0.0.1"
# How many candidates each leg of a hybrid search (BM25, vector) fetches before the two are fused
# (Weaviate's QUERY_HYBRID_MAXIMUM_RESULTS; a request for more gets more). Upstream's 100 is kept:
# fewer candidates saved little time but cost recall@1, because the relative-score fusion scales each
# leg's scores over its own candidates (benchmarks/search_latency.py --depths). Override: set the variable.
HYBRID_CANDIDATES = "100"


def build_id() -> str:
    """The patch's hash: part of the cached binary's folder name (the install script computes it too)."""
    return hashlib.sha256(LISTEN_PATCH.read_bytes()).hexdigest()[:8]


def default_binary(settings: Settings) -> Path:
    return settings.cache_dir / "weaviate" / f"{settings.weaviate_version}-{build_id()}" / "weaviate-server"


class WeaviateUnavailable(RuntimeError):
    """Weaviate cannot be reached or started; the message says what to do."""


@dataclass(frozen=True)
class ClusterPlacement:
    """This node's place in a multi-node cluster on one host (``store/cluster.py``); None = alone."""
    node_name: str
    gossip_port: int  # cluster data port = gossip + 1, raft = gossip + 2, raft internal RPC = gossip + 3
    cluster_join: str  # gossip addresses to join ("127.0.0.1:port,..."); one answering is enough
    raft_join: str  # every voter as name:raft_port
    bootstrap_expect: int


@dataclass(frozen=True)
class EmbeddedServer:
    binary: Path
    data_dir: Path
    http_port: int
    grpc_port: int
    cluster: ClusterPlacement | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "EmbeddedServer":
        binary = Path(env_value("WEAVIATE_BINARY") or default_binary(settings))
        return cls(binary, settings.weaviate_data_dir, settings.weaviate_http_port, settings.weaviate_grpc_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "server.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def is_ready(self, timeout: float = 1.0) -> bool:
        return is_ready(self.url, timeout)

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def _env(self) -> dict[str, str]:
        # Cluster ports are derived from the HTTP port so several servers (e.g. tests) can coexist.
        # Binding raft/gossip to 127.0.0.1 matters: on hosts with an IPv6 interface the server
        # otherwise advertises an address its own raft listener cannot parse.
        p = self.http_port
        name, gossip, join, raft_join, expect = "node1", p + 10, None, f"node1:{p + 12}", 1
        if self.cluster:  # one of several nodes on this host: Weaviate's documented cluster settings
            c = self.cluster
            name, gossip, join, raft_join, expect = c.node_name, c.gossip_port, c.cluster_join, c.raft_join, c.bootstrap_expect
        env = dict(os.environ)
        env.update(
            PERSISTENCE_DATA_PATH=str(self.data_dir / "db"),
            AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED="true",
            DEFAULT_VECTORIZER_MODULE="none",
            ENABLE_MODULES="",
            DISABLE_TELEMETRY="true",
            LOG_LEVEL="warning",
            QUERY_DEFAULTS_LIMIT="25",
            CLUSTER_HOSTNAME=name,
            CLUSTER_ADVERTISE_ADDR=LOOPBACK,
            CLUSTER_BIND_ADDR=LOOPBACK,
            WEAVIATE_LISTEN_HOST=LOOPBACK,  # gRPC + cluster data port (our build patch)
            GO_PROFILING_DISABLE="true",  # upstream opens pprof on *:6060
            PROMETHEUS_MONITORING_ENABLED="false",
            CLUSTER_GOSSIP_BIND_PORT=str(gossip),
            CLUSTER_DATA_BIND_PORT=str(gossip + 1),
            RAFT_PORT=str(gossip + 2),
            RAFT_INTERNAL_RPC_PORT=str(gossip + 3),  # a local cluster needs raft port + 1 (Weaviate's resolver)
            RAFT_BOOTSTRAP_EXPECT=str(expect),
            RAFT_JOIN=raft_join,
            GRPC_PORT=str(self.grpc_port),
            GOMAXPROCS=env.get("GOMAXPROCS", "2"),
            QUERY_HYBRID_MAXIMUM_RESULTS=env.get("QUERY_HYBRID_MAXIMUM_RESULTS", HYBRID_CANDIDATES),
        )
        if self.cluster:
            env.update(CLUSTER_JOIN=join, CLUSTER_IN_LOCALHOST="true")  # nodes share 127.0.0.1: ports per node
        return env

    def start(self, timeout: float = 90.0) -> str:
        """Start the server unless one already answers on our port; returns 'running' or 'started'."""
        if self.is_ready():
            return "running"
        self.wait_until_ready(self.launch(), timeout)
        return "started"

    def launch(self) -> subprocess.Popen:
        """Start the process without waiting (the nodes of a cluster start together: none is ready alone)."""
        if not self.binary.exists():
            raise WeaviateUnavailable(
                f"Weaviate server binary not found at {self.binary}. Build it with "
                f"`bash {INSTALL_SCRIPT.relative_to(PROJECT_ROOT)}` (or `make setup`), or set WEAVIATE_URL "
                "to use a remote server."
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                [str(self.binary), "--host", LOOPBACK, "--port", str(self.http_port), "--scheme", "http"],
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives this process; stopped by `stop()`
            )
        self.pid_file.write_text(str(process.pid))
        return process

    def wait_until_ready(self, process: subprocess.Popen, timeout: float = 90.0) -> None:
        """Wait for readiness, then refuse (stop) a server that listens beyond loopback."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise WeaviateUnavailable(
                    f"Weaviate exited with code {process.returncode} during start-up; "
                    f"last log lines:\n{_tail(self.log_file)}"
                )
            if self.is_ready():
                self._refuse_public_listeners(process.pid)
                return
            time.sleep(0.25)
        raise WeaviateUnavailable(
            f"Weaviate did not become ready on {self.url} within {timeout:.0f}s; log: {self.log_file}\n"
            f"{_tail(self.log_file)}"
        )

    def kill(self) -> bool:
        """SIGKILL, no shutdown (fault tests: a crashed node); returns False if none was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            _reap(pid)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        return True

    def _refuse_public_listeners(self, pid: int) -> None:
        """A binary built without the listen-host patch (e.g. WEAVIATE_BINARY) would serve gRPC on
        every interface: stop it rather than run an unauthenticated server open to the network."""
        public = [f"{ip}:{port}" for ip, port in listening_sockets(pid) if not is_loopback(ip)]
        if public:
            self.stop()
            raise WeaviateUnavailable(
                f"{self.binary} listened on non-loopback addresses ({', '.join(public)}), so it was stopped. "
                f"Build the patched server with `bash {INSTALL_SCRIPT.relative_to(PROJECT_ROOT)}`, or run a "
                "server you secured yourself and set WEAVIATE_URL."
            )

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the server we started (SIGTERM, then SIGKILL); returns False if none was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            _reap(pid)
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> dict:
        return {
            "url": self.url,
            "grpc_port": self.grpc_port,
            "ready": self.is_ready(),
            "pid": self.pid(),
            "binary": str(self.binary),
            "binary_present": self.binary.exists(),
            "data_dir": str(self.data_dir),
        }


def is_ready(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/v1/.well-known/ready", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "::ffff:127.0.0.1") or ip.startswith("::ffff:127.")


def _hex_ip(value: str) -> str:
    """An address as /proc/net/tcp[6] writes it (host byte order, 32-bit words) -> text."""
    import ipaddress

    raw = bytes.fromhex(value)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the process listens on, read from /proc (Linux); [] elsewhere.

    Used at start-up (refuse a server open to the network) and by the tests."""
    try:
        inodes = {
            os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1]
            for fd in os.listdir(f"/proc/{pid}/fd")
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")
        }
    except OSError:
        return []
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A = LISTEN
                address, port = local.rsplit(":", 1)
                found.append((_hex_ip(address), int(port, 16)))
    return sorted(set(found))


def _reap(pid: int) -> None:
    """Collect a child that exited so it does not linger as a zombie (only when we are its parent)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
