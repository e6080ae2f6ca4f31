"""A real, throw-away PostgreSQL server for tests: initdb in a temporary folder, password auth over
TCP on a free loopback port, stopped and deleted afterwards.

The server binaries come from ``HYBRID_TEST_PG_BIN`` or ``pg_config --bindir`` (Debian's
``postgresql`` package; ``scripts/setup.sh`` installs it where missing). PostgreSQL refuses to run as
root, so under root the server runs as the ``postgres`` system user (``runuser``), in a folder it owns.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from hybrid_assets_tests.conftest import free_port


class PostgresMissing(RuntimeError):
    pass


def bin_dir() -> Path:
    if os.environ.get("HYBRID_TEST_PG_BIN"):
        return Path(os.environ["HYBRID_TEST_PG_BIN"])
    # Debian's pg_config (libpq-dev) points at the client library's folder; the server lives beside it.
    candidates = []
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        candidates.append(Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                              check=True).stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    raise PostgresMissing("PostgreSQL server binaries (initdb, pg_ctl) not found: run `make setup` "
                          "(installs Debian's postgresql package) or set HYBRID_TEST_PG_BIN")


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str

    def connect(self, db: str = "postgres"):
        import psycopg2

        connection = psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                      dbname=db, connect_timeout=5)
        connection.autocommit = True
        return connection

    def create_database(self, name: str) -> str:
        with contextlib.closing(self.connect()) as connection, connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        return name

    def env(self, db: str) -> dict[str, str]:
        """The variables deploy/dagster-postgres.yaml reads."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USERNAME": self.user,
                "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": db}


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    binaries = bin_dir()
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    folder = Path(tempfile.mkdtemp(prefix="hybrid-pg-"))
    data, log = folder / "data", folder / "server.log"
    password, user, port = secrets.token_hex(12), "dagster", free_port()
    (folder / "pw").write_text(password)
    if as_root:
        shutil.chown(folder, "postgres", "postgres")
        shutil.chown(folder / "pw", "postgres", "postgres")

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stdout}{done.stderr}"
                               f"{log.read_text() if log.exists() else ''}")

    try:
        run(str(binaries / "initdb"), "-D", str(data), "-U", user, f"--pwfile={folder / 'pw'}",
            "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--no-sync")
        # TCP on loopback only; the unix socket in our own folder (not /var/run/postgresql)
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off -c max_connections=200"
        run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        server = Postgres("127.0.0.1", port, user, password)
        deadline = time.monotonic() + 30
        while True:
            try:
                server.connect().close()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
