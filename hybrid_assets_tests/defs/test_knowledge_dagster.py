"""The knowledge path through Dagster: the job materialises into a real Weaviate, its checks pass on
good data and fail (listing each file) on bad data. When it runs is tested in
test_path_independence.py (Dagster's evaluation of the automation conditions)."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from hybrid_assets.definitions import defs
from hybrid_assets_tests.knowledge.docfactory import WRITERS

pytestmark = pytest.mark.integration


@pytest.fixture
def small_docs(settings):
    shutil.rmtree(settings.docs_dir)
    settings.docs_dir.mkdir(parents=True)
    for fmt in ("md", "pdf", "docx"):
        WRITERS[fmt](settings.docs_dir / f"guide.{fmt}")
    return settings.docs_dir


def check_results(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_knowledge_job_materialises_and_checks(settings, small_docs):
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("knowledge_job")
    result = job.execute_in_process(instance=instance)
    assert result.success
    checks = check_results(result)
    assert checks["weaviate_matches_chunks"].passed
    assert checks["no_empty_chunks"].passed
    assert checks["one_tenant_per_customer"].passed
    assert checks["parse_failures_listed"].passed
    index = result.asset_materializations_for_node("knowledge_index")[0].metadata
    assert index["chunks_written"].value == index["objects_in_weaviate"].value > 0

    # bad input: reported per file in metadata and checks; the rest still ingested, nothing lost
    (small_docs / "broken.pdf").write_bytes(b"%PDF-1.4 junk")
    (small_docs / "empty.txt").write_bytes(b"")
    WRITERS["html"](small_docs / "guide.html")
    result = job.execute_in_process(instance=instance)
    assert result.success
    checks = check_results(result)
    failures = checks["parse_failures_listed"].metadata["failures"].value
    assert not checks["parse_failures_listed"].passed
    assert checks["parse_failures_listed"].severity == dg.AssetCheckSeverity.WARN
    assert set(failures) == {"broken.pdf", "empty.txt"} and "corrupt PDF" in failures["broken.pdf"]
    assert checks["weaviate_matches_chunks"].passed
    index = result.asset_materializations_for_node("knowledge_index")[0].metadata
    assert index["documents_changed"].value == ["guide.html"] and index["chunks_deleted"].value == 0
