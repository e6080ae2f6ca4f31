"""The agent console in a real browser: Playwright driving Debian's chromium (headless) against the real
app (uvicorn), a real Weaviate server, the real model and the real Dagster definitions.

- a ticket (with a customer, an earlier turn, and HTML in both) is answered; the decision strip, the
  reply, the adapter and knowledge versions show; a citation opens its passage (document, section, text,
  tenant) and its link opens the document at that passage;
- a document carrying ``<script>`` and an ``onerror=`` attribute, and the HTML ticket, are shown as text:
  no element is created from them, ``window.__pwned`` stays undefined and no dialog opens;
- approve, correct (a correction the data's validator refuses names the field and writes nothing), and
  "should not have answered" each land as one valid behaviour record in
  ``data/behaviour/reviewed_feedback.jsonl``;
- the behaviour automation sensor then requests the behaviour job, the knowledge sensor nothing;
- with ``HYBRID_API_TOKEN`` set the page asks for the token and shows no data without it;
- the knowledge page lists what is indexed, the file that failed to parse and why, and the tenants.

Three answers in the whole module (each costs CPU seconds). ``HYBRID_UPDATE_SCREENSHOT=1`` writes the
screenshot of the answered console to ``docs/console.png`` (the README's picture).
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import dagster as dg
import pytest

from hybrid_assets.behaviour.dataset import load_behaviour_data, parse_ticket_line
from hybrid_assets.definitions import defs
from hybrid_assets.defs.behaviour.automation import behaviour_automation
from hybrid_assets.defs.knowledge.automation import knowledge_automation
from hybrid_assets.knowledge.documents import folder_version
from hybrid_assets.knowledge.manifest import read_manifest
from hybrid_assets.schema import LabelSpace
from hybrid_assets.serving.console import CONTENT_SECURITY_POLICY
from hybrid_assets.serving.feedback import DECISION_FIELDS, FEEDBACK_FILE
from hybrid_assets.settings import PROJECT_ROOT
from hybrid_assets_tests.conftest import on_test_weaviate, served_in_thread

pytestmark = pytest.mark.integration

DOCS = ["product/webhooks.html", "product/api-authentication.md", "known_issues/ki-105-webhook-timeouts.md",
        "known_issues/ki-102-zebra-zpl-cutoff.txt", "policies/tone-of-voice.md"]
HOSTILE_DOC = "known_issues/ki-666-webhook-signature-faq.txt"
HOSTILE_TEXT = """Webhook signature FAQ <script>window.__pwned = "script"; alert("script")</script>

Every webhook request from Parcelwise carries the X-Parcelwise-Signature header. <img src=x onerror="window.__pwned='img'; alert('img')"> Verify the signature with your webhook secret before trusting the request body.
"""
BROKEN_DOC = "guides/broken.pdf"
TICKET = ('How do I verify that a webhook request really came from Parcelwise? '
          '<img src=x onerror="window.__pwned=\'ticket\'; alert(\'ticket\')">')
EARLIER_TURN = "We set up webhooks yesterday. <script>window.__pwned='turn'</script>"
SECOND_TICKET = "Our Zebra printer cuts off the bottom of the 4x6 labels. What should we change?"
THIRD_TICKET = "Can you ship a parcel by drone to Antarctica?"
TOKEN = "console-s3cret"
KNOWLEDGE = {"knowledge_documents", "customer_account_files", "document_chunks", "knowledge_index",
             "customer_accounts_index"}
BEHAVIOUR = {"behaviour_data_files", "behaviour_dataset", "support_adapter", "promoted_adapter"}
SOURCES = {"knowledge_documents", "customer_account_files", "behaviour_data_files"}
ANSWER_TIMEOUT_MS = 20 * 60 * 1000  # a CPU generation beside other work


class Sensors:
    """The two automation sensors' conditions, evaluated by Dagster on real observations of the data."""

    def __init__(self):
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursors: dict[str, object] = {}

    def observe(self) -> None:
        with ThreadPoolExecutor(max_workers=1) as worker:
            worker.submit(self._observe).result()

    def _observe(self) -> None:
        for job in ("knowledge_sources_job", "behaviour_sources_job"):
            assert defs.resolve_job_def(job).execute_in_process(instance=self.instance).success

    def materialized(self, keys) -> None:
        for key in keys:
            self.instance.report_runless_asset_event(dg.AssetMaterialization(key))

    def tick(self, sensor) -> set[str]:
        # Dagster evaluates with asyncio.run(); Playwright's sync API keeps an event loop running in this
        # thread while the module's browser is open, so the evaluation runs in a thread of its own.
        with ThreadPoolExecutor(max_workers=1) as worker:
            return worker.submit(self._tick, sensor).result()

    def _tick(self, sensor) -> set[str]:
        result = dg.evaluate_automation_conditions(defs=defs, instance=self.instance, asset_selection=sensor.asset_selection,
                                                   cursor=self.cursors.get(sensor.name))
        self.cursors[sensor.name] = result.cursor
        return {key for key in KNOWLEDGE | BEHAVIOUR if result.get_num_requested(dg.AssetKey(key))}


@pytest.fixture(scope="module")
def console(weaviate_server, tmp_path_factory):
    """A private data folder (a few documents, a hostile one, a broken one; all accounts; the behaviour
    data), indexed in the test Weaviate; the real app with the real engine behind uvicorn."""
    from hybrid_assets.knowledge.pipeline import ingest_knowledge
    from hybrid_assets.serving.api import create_app
    from hybrid_assets.serving.engine import AnswerEngine, load_labels

    data = tmp_path_factory.mktemp("console") / "data"
    for doc in DOCS:
        (data / "knowledge/docs" / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / "data/knowledge/docs" / doc, data / "knowledge/docs" / doc)
    (data / "knowledge/docs" / HOSTILE_DOC).write_text(HOSTILE_TEXT, encoding="utf-8")
    (data / "knowledge/docs" / BROKEN_DOC).parent.mkdir(parents=True, exist_ok=True)
    (data / "knowledge/docs" / BROKEN_DOC).write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage without xref")
    shutil.copytree(PROJECT_ROOT / "data/knowledge/accounts", data / "knowledge/accounts")
    shutil.copytree(PROJECT_ROOT / "data/behaviour", data / "behaviour")
    with on_test_weaviate(data) as (settings, client):
        ingested = ingest_knowledge(client, settings)
        assert set(ingested.chunking.failures) == {BROKEN_DOC}, ingested.chunking.failures

        # Dagster sees the data as it is now, everything materialised: nothing to do yet.
        sensors = Sensors()
        sensors.observe()
        sensors.materialized((KNOWLEDGE | BEHAVIOUR) - SOURCES)
        assert sensors.tick(behaviour_automation) == set() and sensors.tick(knowledge_automation) == set()

        engine = AnswerEngine(settings, load_labels(settings), k=4, max_new_tokens=400)
        with served_in_thread(create_app(settings, engine=engine), stop_timeout=20) as url:
            yield {"url": url, "settings": settings, "data": data, "sensors": sensors,
                   "labels": load_labels(settings), "answers": {}}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is missing: run `make setup` (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (its own sessionStorage) that records every dialog and page error."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.dialogs, page.errors = [], []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()


def feedback_lines(console) -> list[str]:
    path = console["data"] / "behaviour" / FEEDBACK_FILE
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def assert_nothing_ran(page) -> None:
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.dialogs == []


def answer_in_page(page, console, ticket: str, customer: str | None = None, turns: tuple[str, ...] = ()) -> dict:
    page.goto(console["url"] + "/")
    page.wait_for_selector("#app:not([hidden])")
    if customer:
        page.select_option("#customer", customer)
    for turn in turns:
        page.click("#add-turn")
        page.locator("#turns .turn textarea").last.fill(turn)
    page.fill("#ticket", ticket)
    with page.expect_response(lambda r: r.url.endswith("/v1/console/answer"), timeout=ANSWER_TIMEOUT_MS) as response:
        page.click("#answer-button")
    assert response.value.status == 200, response.value.text()
    page.wait_for_selector("#result:not([hidden])")
    body = response.value.json()
    assert body["timing_ms"]["queue"] is not None  # answered through the API's batching queue
    return body


def assert_passage_opens(page, passage: dict, button: str) -> None:
    """Clicking ``button`` opens ``passage``: document, section, text and tenant, and a document link."""
    page.click(button)
    page.wait_for_selector("#passage:not([hidden])")
    assert page.text_content("#passage-text") == passage["text"]
    assert page.inner_text("#passage-section") == (passage["section"] or "—")
    assert passage["doc_id"] in page.inner_text("#passage-doc")
    assert page.inner_text("#passage-tenant") == (passage["tenant"] or "shared knowledge (no tenant)")
    query = {"doc": passage["doc_id"], **({"tenant": passage["tenant"]} if passage["tenant"] else {})}
    assert page.get_attribute("#passage-link", "href") == \
        "/document?" + urlencode(query) + "#chunk-" + passage["chunk_id"]


def review_in_page(page, console, button: str, action: str, line: int) -> dict:
    """Click a review button as "Ana Reviewer"; the record must land as line ``line`` of the feedback
    file, valid by the behaviour data's own validator. Returns the written record."""
    page.fill("#reviewer", "Ana Reviewer")
    with page.expect_response(lambda r: r.url.endswith("/v1/console/reviews")) as saved:
        page.click(button)
    assert saved.value.status == 201, saved.value.text()
    page.wait_for_selector(f"#review-done:has-text('Saved {action}')")
    lines = feedback_lines(console)
    assert len(lines) == line
    _, reason = parse_ticket_line(lines[-1], console["labels"], f"{FEEDBACK_FILE}:{line}")
    assert reason is None, reason
    return json.loads(lines[-1])


def decision_control(labels: LabelSpace, schema: dict) -> tuple[str, str]:
    """(name of the decision field, the select value that means "it answers") for whichever schema this is."""
    name = next(field for field in DECISION_FIELDS if field in schema["properties"])
    return name, "true" if schema["properties"][name].get("type") == "boolean" else "answer"


def test_answer_a_ticket_open_a_citation_and_nothing_hostile_runs(console, page):
    response = page.goto(console["url"] + "/")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    result = answer_in_page(page, console, TICKET, customer="C1003", turns=(EARLIER_TURN,))
    console["answers"]["first"] = result
    answer = result["answer"]

    # The decision at a glance, the reply, and which adapter and knowledge version answered.
    strip = page.locator("#decision")
    assert strip.locator("[data-field=sentiment]").inner_text().split()[-1] == answer["sentiment"]
    assert strip.locator("[data-field=category]").inner_text().split()[-1] == answer["category"]
    assert strip.locator("[data-field=escalation]").inner_text().split()[-1] == answer["escalation"]["level"]
    assert page.inner_text("#escalation-reason") == (answer["escalation"]["reason"] or "(no reason given)")
    assert strip.locator("[data-field=decision]").inner_text().split(maxsplit=1)[-1] == \
        result["decision"]["value"].replace("_", " ")
    assert page.text_content("#reply") == answer["reply"]
    manifest = read_manifest(console["settings"])["documents"]
    provenance = page.inner_text("#provenance")
    assert "base model (no adapter promoted)" in provenance and result["adapter_version"] is None
    assert manifest["version"] in provenance and result["knowledge"]["version"] == manifest["version"]

    # The context the model saw includes the hostile document, and the customer's own tenant only.
    docs = {p["doc_id"] for p in result["passages"]}
    assert HOSTILE_DOC in docs and "product/webhooks.html" in docs, docs
    assert {p["tenant"] for p in result["passages"]} <= {None, "C1003"}

    # Open a passage: the model's first citation, or (the base model often cites nothing, and is then
    # answered "not answerable") the first passage it saw; the correction test opens a citation for sure.
    if result["sources"]:
        shown, button = result["sources"][0], f"#citations button[data-cite={result['sources'][0]['id']}]"
    else:
        assert page.inner_text("#citations") == "Nothing cited."
        page.click("#context-box summary")
        shown, button = result["passages"][0], f"#context button[data-cite={result['passages'][0]['id']}]"
    console["answers"]["opened"] = (shown, button)
    assert_passage_opens(page, shown, button)
    if os.environ.get("HYBRID_UPDATE_SCREENSHOT") == "1":
        page.screenshot(path=str(PROJECT_ROOT / "docs/console.png"), full_page=True)

    # The hostile passage, opened: its markup is text on the page, never elements.
    if page.locator("#context-box").get_attribute("open") is None:
        page.click("#context-box summary")
    hostile = next(p for p in result["passages"] if p["doc_id"] == HOSTILE_DOC)
    page.click(f"#context button[data-cite={hostile['id']}]")
    assert "<script>" in page.text_content("#passage-text") or "onerror=" in page.text_content("#passage-text")
    assert page.locator("#passage-text *").count() == 0
    assert page.locator("#app img, #app script").count() == 0
    assert_nothing_ran(page)

    # The passage's link opens the document at that passage.
    page.click(button)
    page.click("#passage-link")
    page.wait_for_selector(".chunk.wanted")
    assert page.inner_text(".chunk.wanted .chunk-text") == shown["text"]
    # ... and so does the hostile document's page, as text.
    page.goto(console["url"] + f"/document?doc={HOSTILE_DOC}")
    page.wait_for_selector(".chunk")
    assert "window.__pwned" in page.inner_text("#d-chunks")
    assert page.locator("#d-chunks img, #d-chunks script").count() == 0
    assert_nothing_ran(page)
    assert page.errors == []


def test_approve_and_correct_land_in_the_feedback_file_with_a_valid_schema(console, page):
    labels = console["labels"]
    first = console["answers"].get("first")
    assert first, "runs after the answer test (one generation per answer)"
    assert feedback_lines(console) == []

    # Approve the first answer: back on screen from its API response (no second generation for it).
    page.goto(console["url"] + "/")
    page.wait_for_selector("#app:not([hidden])")
    page.evaluate("result => renderAnswer(result)", first)
    written = review_in_page(page, console, "#approve", "approve", line=1)
    assert written["ticket"] == TICKET and written["customer_id"] == "C1003"
    assert written["history"] == [{"role": "customer", "content": EARLIER_TURN}]
    assert written["answer"] == first["answer"]
    # the context is what the model saw: one item per passage shown, with its source
    assert [(c["id"], c["source"]) for c in written["context"]] == [(p["id"], p["source"]) for p in first["passages"]]
    assert all(p["text"].split()[0] in c["text"] for c, p in zip(written["context"], first["passages"]))
    assert written["review"]["reviewer"] == "Ana Reviewer" and written["review"]["action"] == "approve"
    assert written["review"]["reviewed_at"] and written["review"]["knowledge_version"] == first["knowledge"]["version"]
    again = page.request.post(console["url"] + "/v1/console/reviews", data={
        "answer_id": first["answer_id"], "action": "approve", "reviewer": "Ana Reviewer"})
    assert again.status == 409  # one record per answer
    assert len(feedback_lines(console)) == 1

    # Correct the second answer. First a correction the behaviour data's validator refuses: it says the
    # assistant answers but cites nothing. The field and the reason show; nothing is written.
    result = answer_in_page(page, console, SECOND_TICKET, customer="C1005")
    assert result["passages"], "the printer ticket retrieves the Zebra document"
    page.click("#correct")
    page.wait_for_selector("#correction:not([hidden])")
    schema = page.evaluate("META.schema")
    decision, answers_value = decision_control(labels, schema)
    page.select_option(f"#correction-fields select[name={decision}]", answers_value)
    for box in page.locator("#correction-fields [data-kind=citations] input").all():
        box.uncheck()
    with page.expect_response(lambda r: r.url.endswith("/v1/console/reviews")) as refused:
        page.click("#save-correction")
    assert refused.value.status == 422
    problems = refused.value.json()["problems"]
    assert problems and problems[0]["field"] in {decision, "citations"} and problems[0]["reason"]
    assert problems[0]["reason"] in page.inner_text("#review-errors")
    assert len(feedback_lines(console)) == 1

    # Then a valid correction: another category and escalation, a rewritten reply, the first passage cited.
    new_category = next(c for c in labels.categories if c != result["answer"]["category"])
    new_level = next(level for level in labels.escalation_levels if level != result["answer"]["escalation"]["level"])
    page.select_option("#correction-fields select[name=category]", new_category)
    page.select_option("#correction-fields select[name='escalation.level']", new_level)
    page.fill("#correction-fields [name='escalation.reason']", "Reviewer: printer settings question.")
    page.fill("#correction-fields [name=reply]", "Set the label size to 4x6 in the printer driver. <b>Thanks</b>")
    page.locator("#correction-fields [data-kind=citations] input").first.check()
    with page.expect_response(lambda r: r.url.endswith("/v1/console/reviews")) as corrected:
        page.click("#save-correction")
    assert corrected.value.status == 201, corrected.value.text()
    page.wait_for_selector("#review-done:has-text('Saved correct')")
    lines = feedback_lines(console)
    assert len(lines) == 2
    record, reason = parse_ticket_line(lines[1], labels, f"{FEEDBACK_FILE}:2")
    assert reason is None, reason
    written = json.loads(lines[1])
    assert written["answer"]["category"] == new_category and written["answer"]["escalation"]["level"] == new_level
    assert written["answer"]["reply"].endswith("<b>Thanks</b>") and written["answer"]["citations"] == ["S1"]
    assert written["review"]["action"] == "correct" and written["review"]["model_answer"] == result["answer"]
    assert {"category", "escalation.level", "reply"} <= set(written["review"]["changed_fields"])
    # The console now shows the answer as reviewed; its citation opens the cited passage.
    page.wait_for_selector("#result-title:has-text('as reviewed')")
    assert page.locator("#decision [data-field=category]").inner_text().split()[-1] == new_category
    assert_passage_opens(page, result["passages"][0], "#citations button[data-cite=S1]")
    assert written["ticket"] == SECOND_TICKET and written["customer_id"] == "C1005"

    dataset = load_behaviour_data(console["data"] / "behaviour", labels)
    assert {json.loads(line)["id"] for line in lines} <= {r.id for r in dataset.records}
    assert not [p for p in dataset.problems if p.file == FEEDBACK_FILE]
    assert page.errors == []


def test_should_not_have_answered_lands_as_the_honest_decision(console, page):
    """The third review action, in the page: whatever the model decided, the record written is the
    schema's not-answerable decision with nothing cited, and the labels the model chose stay."""
    assert len(feedback_lines(console)) == 2, "runs after the review test"
    result = answer_in_page(page, console, THIRD_TICKET)
    written = review_in_page(page, console, "#should-not", "should_not_answer", line=3)
    assert written["ticket"] == THIRD_TICKET and written["customer_id"] is None
    assert written["answer"]["decision"] == "not_answerable" and written["answer"]["citations"] == []
    assert (written["answer"]["sentiment"], written["answer"]["category"]) == \
        (result["answer"]["sentiment"], result["answer"]["category"])
    assert written["review"]["action"] == "should_not_answer"
    assert written["review"]["model_answer"] == result["answer"]
    # The page shows the reviewed decision.
    page.wait_for_selector("#result-title:has-text('as reviewed')")
    assert page.locator("#decision [data-field=decision]").inner_text().split(maxsplit=1)[-1] == "not answerable"
    assert page.errors == []


def test_the_behaviour_sensor_then_requests_the_behaviour_job_and_no_knowledge_job(console):
    assert len(feedback_lines(console)) == 3, "runs after the review tests"
    settings = console["settings"]
    knowledge_before = folder_version(settings.docs_dir), folder_version(settings.accounts_dir)
    sensors = console["sensors"]
    sensors.observe()
    requested = sensors.tick(behaviour_automation)
    assert {"behaviour_dataset", "support_adapter"} <= requested <= BEHAVIOUR
    # The knowledge sensor may request its sources' every-minute *observation* (when a minute boundary
    # passed during the module); what must not happen is any knowledge materialisation.
    assert sensors.tick(knowledge_automation) - SOURCES == set()
    assert (folder_version(settings.docs_dir), folder_version(settings.accounts_dir)) == knowledge_before


def test_with_a_token_set_the_page_asks_for_it_and_refuses_without_it(console, page, monkeypatch):
    monkeypatch.setenv("HYBRID_API_TOKEN", TOKEN)
    page.goto(console["url"] + "/")
    page.wait_for_selector("#auth:not([hidden])")
    assert page.locator("#app").is_hidden()
    assert page.locator("#customer option").count() == 1  # no customer data reached the page
    page.fill("#token-input", "wrong")
    page.click("#token-form button")
    page.wait_for_selector("#auth-error:has-text('refused')")
    assert page.locator("#app").is_hidden()

    # The API refuses too: no answer, no review, nothing written.
    before = feedback_lines(console)
    refused = page.request.post(console["url"] + "/v1/console/reviews", data={
        "answer_id": console["answers"]["first"]["answer_id"], "action": "approve", "reviewer": "x"})
    assert refused.status == 401
    assert page.request.post(console["url"] + "/v1/console/answer", data={"ticket": "hi"}).status == 401
    assert page.request.get(console["url"] + "/v1/console/knowledge").status == 401
    assert feedback_lines(console) == before

    page.fill("#token-input", TOKEN)
    page.click("#token-form button")
    page.wait_for_selector("#app:not([hidden])")
    assert page.locator("#customer option").count() == 1 + 24
    assert page.locator("#auth").is_hidden()
    page.goto(console["url"] + "/knowledge")  # the token is kept for the tab
    page.wait_for_selector("#k-documents tbody tr")
    assert page.errors == []


def test_knowledge_and_loop_pages_show_the_index_the_failures_and_the_reviews(console, page):
    response = page.goto(console["url"] + "/knowledge")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    page.wait_for_selector("#k-documents tbody tr")
    failures = page.locator("#k-failures tbody tr")
    assert failures.count() == 1
    assert BROKEN_DOC in failures.inner_text() and "corrupt PDF" in failures.inner_text()
    rows = {row.locator("td").first.inner_text(): row.inner_text() for row in page.locator("#k-documents tbody tr").all()}
    assert set(rows) == set(DOCS) | {HOSTILE_DOC, BROKEN_DOC}
    assert "indexed" in rows["product/webhooks.html"] and "failed" in rows[BROKEN_DOC]
    assert f"{len(DOCS) + 1} of {len(DOCS) + 2}" in page.inner_text("#k-summary")
    assert read_manifest(console["settings"])["documents"]["finished_at"] in page.inner_text("#k-summary")
    tenants = page.locator("#k-tenants tbody tr")
    assert tenants.count() == 24
    assert "indexed" in tenants.filter(has_text="C1003").inner_text()

    page.goto(console["url"] + "/loop")
    page.wait_for_selector("#l-recent tbody tr")
    assert page.locator("#l-recent tbody tr").count() == 3
    assert "should_not_answer" in page.inner_text("#l-recent")
    assert "3 reviewed examples not yet in the promoted adapter" in page.inner_text("#loop-banner")
    assert "none promoted" in page.inner_text("#l-adapter")
    assert "onerror=" in page.inner_text("#l-recent")  # the HTML ticket, as text
    assert page.locator("#l-recent img, #l-recent script").count() == 0
    assert_nothing_ran(page)
    assert page.errors == []
