"""The console's pages and API without a model or Weaviate (fast): security headers on every page and no
data in them, the token on every console call, cross-site writes refused, the form built from the
schema. The browser test (``test_console_browser.py``) drives the same app with everything real."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from hybrid_assets.schema import FIELD_ORDER, answer_json_schema
from hybrid_assets.serving import api
from hybrid_assets.serving.console import CONTENT_SECURITY_POLICY, PAGES
from hybrid_assets.serving.engine import load_labels
from hybrid_assets.serving.feedback import FEEDBACK_FILE
from hybrid_assets.settings import PROJECT_ROOT, load_settings


class NoClient:
    def close(self) -> None:
        pass


class EngineThatMustNotBeReached:
    adapter_version = None

    def answer_many(self, *args, **kwargs):
        raise AssertionError("the engine was reached")

    prepare = answer_prepared = answer_many


@pytest.fixture
def http(tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(PROJECT_ROOT / "data/behaviour", data / "behaviour")
    shutil.copytree(PROJECT_ROOT / "data/knowledge/accounts", data / "knowledge/accounts")
    monkeypatch.setenv("HYBRID_DATA_DIR", str(data))
    monkeypatch.delenv("HYBRID_API_TOKEN", raising=False)
    monkeypatch.setattr(api, "connect", lambda settings: NoClient())  # no Weaviate needed for these calls
    with TestClient(api.create_app(load_settings(), engine=EngineThatMustNotBeReached())) as client:
        client.data = data
        yield client


def test_every_page_has_the_security_headers_and_no_data(http):
    for path in PAGES:
        response = http.get(path)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "C1003" not in response.text  # customers come from the (token-checked) API, never the page
        assert "<script>" not in response.text and "onclick" not in response.text  # no inline script
    assert http.get("/console-static/console.js").status_code == 200


def test_the_console_form_is_built_from_the_answer_schema(http):
    meta = http.get("/v1/console/meta").json()
    labels = load_labels(load_settings())
    assert meta["schema"] == answer_json_schema(labels)
    assert meta["field_order"] == [f for f in FIELD_ORDER if f in meta["schema"]["properties"]]
    assert meta["schema"]["properties"]["category"]["enum"] == list(labels.categories)
    assert [c["customer_id"] for c in meta["customers"]][:2] == ["C1001", "C1002"] and len(meta["customers"]) == 24


def test_console_calls_need_the_token_when_one_is_set(http, monkeypatch):
    monkeypatch.setenv("HYBRID_API_TOKEN", "pages-s3cret")
    for path in ("/v1/console/meta", "/v1/console/loop", "/v1/console/knowledge", "/v1/console/documents/x.md"):
        assert http.get(path).status_code == 401, path
    assert http.post("/v1/console/answer", json={"ticket": "hi"}).status_code == 401
    assert http.post("/v1/console/reviews", json={}).status_code == 401
    assert http.get("/").status_code == 200  # the page itself only asks for the token
    assert http.get("/v1/console/meta", headers={"Authorization": "Bearer pages-s3cret"}).status_code == 200


def test_cross_site_writes_are_refused_and_nothing_is_written(http):
    evil = {"Origin": "https://evil.example"}
    assert http.post("/v1/console/answer", json={"ticket": "hi"}, headers=evil).status_code == 403
    review = {"answer_id": "0" * 16, "action": "approve", "reviewer": "x"}
    assert http.post("/v1/console/reviews", json=review, headers=evil).status_code == 403
    assert http.post("/v1/console/reviews", json=review).status_code == 404  # same origin: unknown answer
    assert http.post("/v1/console/reviews", json=dict(review, action="delete")).status_code == 422
    assert not (http.data / "behaviour" / FEEDBACK_FILE).exists()
    loop = http.get("/v1/console/loop").json()
    assert loop["reviewed"] == 0 and loop["pending"] == 0 and loop["promoted"] is None


def test_the_loop_page_data_shows_the_promoted_adapters_gate_with_its_champion(http):
    """The gate figures the console shows are the gate's own verdict, the champion check included: an
    adapter whose lineage says it beat the base but not the adapter it replaced reads as failed."""
    from hybrid_assets.behaviour.registry import REQUIRED_ADAPTER_FILES, AdapterRegistry
    from hybrid_assets.settings import load_settings as settings_now

    registry = AdapterRegistry(settings_now().adapters_dir)
    staging = http.data / "staging"
    staging.mkdir()
    for name in REQUIRED_ADAPTER_FILES:
        (staging / name).write_text("{}")
    base = {"json_validity": 0.8, "category_accuracy": 0.2, "sentiment_accuracy": 0.2, "escalation_accuracy": 0.5,
            "decision_accuracy": 0.3}
    adapter = {name: value + 0.1 for name, value in base.items()}
    champion = {name: value + 0.2 for name, value in base.items()}
    version = registry.commit(staging, {"dataset_version": "d" * 64, "base_model": "tiny", "metrics": {
        "eval_records": 32, "base": base, "adapter": adapter,
        "champion": {"version_id": "20261201T000000Z-cafecafe", "metrics": champion}}})
    registry.promote(version.version_id)

    promoted = http.get("/v1/console/loop").json()["promoted"]

    assert promoted["version_id"] == version.version_id and promoted["eval_records"] == 32
    assert promoted["champion_version"] == "20261201T000000Z-cafecafe"
    assert promoted["gate"]["passed"] is False
    assert any(reason.startswith("champion: candidate mean") and "<" in reason for reason in promoted["gate"]["reasons"])
    rows = {row["metric"]: row for row in promoted["metrics"]}
    assert rows["category_accuracy"]["adapter"] == pytest.approx(0.3) and rows["category_accuracy"]["gated"]
