"""Dagster on PostgreSQL (issue #13): ``deploy/dagster-postgres.yaml`` as a real instance's
dagster.yaml, against a real PostgreSQL server this module starts (initdb in a temporary folder).

- The instance built from the file keeps runs, the event log and schedule storage in PostgreSQL, with
  every credential from an environment variable; the knowledge job runs through it, and a second
  instance (another process would do the same) reads the run and its materialisations back.
- A real ``dagster-daemon`` on that instance ticks the ``knowledge_automation`` sensor: the tick
  observes the folders, a changed document makes the next tick request the knowledge assets, and the
  run it launches re-indexes the document into the test Weaviate.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from hybrid_assets.definitions import defs
from hybrid_assets.knowledge.pipeline import search
from hybrid_assets.settings import PROJECT_ROOT
from hybrid_assets.store.client import open_client
from hybrid_assets_tests.pgserver import PostgresMissing, postgres_server

pytestmark = [pytest.mark.integration, pytest.mark.scale]

DEPLOY_YAML = PROJECT_ROOT / "deploy" / "dagster-postgres.yaml"
# A limit against hanging, not a timing assertion. Measured here (2 shared cores, load ~5): the daemon
# phase takes ~5 min: a tick every 30 s, the observation due on the next minute's cron tick, then one
# queued run at a time (run_queue: 1) whose multiprocess executor starts a Python process per step.
DAEMON_WAIT_S = 600


@pytest.fixture(scope="module")
def postgres():
    try:
        server = postgres_server()
        pg = server.__enter__()
    except PostgresMissing as exc:
        pytest.fail(str(exc))
    yield pg
    server.__exit__(None, None, None)


@pytest.fixture
def dagster_home(postgres, tmp_path, monkeypatch) -> Path:
    """$DAGSTER_HOME with the deploy file as its dagster.yaml and a fresh database named by the env."""
    db = postgres.create_database(f"dagster_{uuid.uuid4().hex[:8]}")
    for key, value in postgres.env(db).items():
        monkeypatch.setenv(key, value)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY_YAML, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def small_docs(settings):
    shutil.rmtree(settings.docs_dir)
    settings.docs_dir.mkdir(parents=True)
    (settings.docs_dir / "labels.md").write_text("# Labels\n\n## Voiding\n\nVoid a label within 30 days for a refund.\n")
    (settings.docs_dir / "webhooks.md").write_text("# Webhooks\n\n## Signatures\n\nEvery webhook carries an "
                                                   "X-Parcelwise-Signature header (HMAC-SHA256).\n")
    return settings.docs_dir


def table_count(postgres, db: str, sql: str) -> int:
    with postgres.connect(db) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def test_the_deploy_file_reads_every_credential_from_the_environment():
    config = yaml.safe_load(DEPLOY_YAML.read_text())
    for storage in ("run_storage", "event_log_storage", "schedule_storage"):
        assert config[storage]["module"].startswith("dagster_postgres."), storage
        db = config[storage]["config"]["postgres_db"]
        for field in ("hostname", "port", "username", "password", "db_name"):
            assert set(db[field]) == {"env"}, f"{storage}.{field} must come from an env var, not the file"


def test_the_knowledge_job_runs_through_a_postgres_instance(postgres, dagster_home, settings, small_docs, monkeypatch):
    instance = dg.DagsterInstance.get()
    try:
        assert type(instance.run_storage).__module__.startswith("dagster_postgres")
        assert type(instance.event_log_storage).__module__.startswith("dagster_postgres")
        assert type(instance.schedule_storage).__module__.startswith("dagster_postgres")
        assert defs.resolve_job_def("knowledge_sources_job").execute_in_process(instance=instance).success
        result = defs.resolve_job_def("knowledge_job").execute_in_process(instance=instance)
        assert result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks["weaviate_matches_chunks"] and checks["one_tenant_per_customer"]
        run_id = result.run_id
    finally:
        instance.dispose()

    # a second instance from the same file (what the webserver or the daemon would open) reads it all back
    again = dg.DagsterInstance.get()
    try:
        assert again.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        index = again.get_latest_materialization_event(dg.AssetKey("knowledge_index")).asset_materialization
        assert index.metadata["objects_in_weaviate"].value == index.metadata["chunks_written"].value > 0
        assert again.get_latest_data_version_record(dg.AssetKey("knowledge_documents"), is_source=True) is not None
    finally:
        again.dispose()
    db = os.environ["DAGSTER_PG_DB"]
    assert table_count(postgres, db, "select count(*) from runs") == 2
    assert table_count(postgres, db, "select count(*) from event_logs where dagster_event_type = "
                                     "'ASSET_MATERIALIZATION'") >= 3

    # the credentials really come from the environment: a wrong password is refused by the server
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "wrong")
    with pytest.raises(Exception, match="password authentication failed|too many retries for DB connection"):
        dg.DagsterInstance.get().get_run_records()


def _daemon(home: Path, log: Path) -> subprocess.Popen:
    daemon = Path(sys.executable).parent / "dagster-daemon"
    with open(log, "wb") as out:
        return subprocess.Popen([str(daemon), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")],
                                cwd=PROJECT_ROOT, env=dict(os.environ, DAGSTER_HOME=str(home)),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _sensor_runs(instance) -> list:
    return [r.dagster_run for r in instance.get_run_records(
        filters=dg.RunsFilter(tags={"dagster/sensor_name": "knowledge_automation"}))]


def test_the_automation_sensor_ticks_through_postgres(postgres, dagster_home, settings, small_docs, tmp_path):
    instance = dg.DagsterInstance.get()
    daemon = None
    try:
        # up to date first (observed + materialised in process), then one document changes
        assert defs.resolve_job_def("knowledge_sources_job").execute_in_process(instance=instance).success
        assert defs.resolve_job_def("knowledge_job").execute_in_process(instance=instance).success
        (small_docs / "labels.md").write_text("# Labels\n\n## Voiding\n\nVoid a label within 45 days; "
                                              "the refund reaches the wallet in 5 business days.\n")

        daemon = _daemon(dagster_home, tmp_path / "daemon.log")
        deadline = time.monotonic() + DAEMON_WAIT_S
        while True:
            runs = _sensor_runs(instance)
            indexed = [r for r in runs if dg.AssetKey("knowledge_index") in (r.asset_selection or ())]
            if indexed and indexed[0].is_finished:
                break
            if daemon.poll() is not None or time.monotonic() > deadline:
                # a run left QUEUED means the QueuedRunCoordinator daemon did not dequeue it: say whether it ran
                daemons = {name: status.healthy for name, status in instance.get_daemon_statuses().items()}
                pytest.fail(f"no knowledge_index run from the sensor (daemon rc={daemon.poll()}, runs: "
                            f"{[(r.job_name, r.status.value) for r in runs]}, run coordinator "
                            f"{type(instance.run_coordinator).__name__}, daemons healthy: {daemons}):\n"
                            + (tmp_path / "daemon.log").read_text(errors="replace")[-3000:])
            time.sleep(3)

        # the tick's observation run, then the run it requested for the changed document, both succeeded;
        # the sensor observes every minute, so a later observation run may still be starting: every
        # finished run must have succeeded, and the rest is left out of the checks below
        runs = [r for r in runs if r.is_finished]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [(r.run_id, r.status) for r in runs]
        assert indexed[0].status == dg.DagsterRunStatus.SUCCESS
        observed = [r for r in runs if dg.AssetKey("knowledge_documents") in (r.asset_selection or ())]
        assert observed, "the tick never observed the documents folder"
        assert {k.to_user_string() for k in indexed[0].asset_selection} >= {"document_chunks", "knowledge_index"}
        with open_client(settings, start_embedded=False) as client:
            hits = search(client, settings, "how many days to void a label", k=3)
        assert any("45 days" in hit.text for hit in hits) and not any("30 days" in hit.text for hit in hits)

        # the ticks themselves live in PostgreSQL's schedule storage, read through the instance
        db = os.environ["DAGSTER_PG_DB"]
        with postgres.connect(db) as connection, connection.cursor() as cursor:
            cursor.execute("select distinct job_origin_id, selector_id from job_ticks")
            instigators = cursor.fetchall()
        ticks = [t for origin, selector in instigators for t in instance.get_ticks(origin, selector)]
        ours = [t for t in ticks if t.instigator_name == "knowledge_automation"]
        assert any(t.status.value == "SUCCESS" and t.run_ids for t in ours)
        assert {run_id for t in ours for run_id in t.run_ids} >= {r.run_id for r in runs}
    finally:
        if daemon is not None and daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
        instance.dispose()
