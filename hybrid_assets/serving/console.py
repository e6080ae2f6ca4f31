"""The agent console: web pages served by the API's own app (``make serve`` -> http://127.0.0.1:8000/).

- ``/`` answer a ticket (customer, earlier turns) and review the answer: approve, correct, or "should
  not have answered" (each becomes one behaviour record, ``serving/feedback.py``);
- ``/knowledge`` what is indexed, the last ingest, parse failures and why, one tenant per customer;
- ``/loop`` the promoted adapter, its gate figures, and the reviewed examples it has not been trained on;
- ``/document?doc=...`` one document's passages (a citation's link).

The pages are server-rendered shells (Jinja2, autoescaped) that carry no data; their one script
(``static/console.js``, same origin) reads everything from ``/v1/console/*`` with the bearer token when
the server sets ``HYBRID_API_TOKEN`` - so ``RequestGuard`` checks those calls like every ``/v1`` call,
and a page without the token shows nothing but the token prompt. The script builds the DOM with
``textContent`` only: model output, document text and ticket text are never parsed as HTML. Each page
carries a Content-Security-Policy that allows scripts, styles and connections to this origin only.
"""

from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader
from pydantic import BaseModel, Field

from hybrid_assets.behaviour.evaluate import GATE_METRICS, promotion_gate
from hybrid_assets.behaviour.pipeline import COMPARED_METRICS
from hybrid_assets.behaviour.registry import AdapterRegistry, RegistryError
from hybrid_assets.behaviour.dataset import dataset_version, find_behaviour_files
from hybrid_assets.schema import FIELD_ORDER, LabelSpace, answer_json_schema
from hybrid_assets.serving.feedback import (
    ACTIONS,
    AnswerLog,
    FeedbackFile,
    ReviewRefused,
    build_record,
    decision_of,
    loop_status,
)
from hybrid_assets.serving.knowledge_status import customers, document_view, knowledge_status, knowledge_version
from hybrid_assets.settings import Settings

HERE = Path(__file__).resolve().parent
STATIC_URL = "/console-static"
CONSOLE_API = "/v1/console"
CITATIONS_FIELD = "citations"
CLIENT_CLOSED = 499  # the reviewer's page went away before its answer was ready (nginx's status)

# Scripts, styles, images and fetches from this origin only; no inline script, no plugins, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'; object-src 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
PAGES = {"/": ("console.html", "Console"), "/knowledge": ("knowledge.html", "Knowledge"),
         "/loop": ("loop.html", "Feedback loop"), "/document": ("document.html", "Document")}


class ReviewRequest(BaseModel):
    answer_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    action: Literal[ACTIONS]  # type: ignore[valid-type]
    reviewer: str = Field(max_length=200)
    answer: dict | None = Field(default=None, description="The corrected answer (action 'correct')")
    note: str = Field(default="", max_length=2000)


def same_origin(request: Request) -> None:
    """Writes come from the console's own pages: a browser sends ``Origin`` with a cross-site POST, and
    one naming another site is refused (tools without a browser send none and are not affected)."""
    origin = request.headers.get("origin")
    if origin and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
        raise HTTPException(status_code=403, detail=f"cross-origin request from {origin!r} refused")


def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True,
                       lstrip_blocks=True)


def promoted_summary(settings: Settings) -> dict | None:
    """The promoted adapter with its lineage's gate figures (base vs adapter on the eval subset)."""
    try:
        current = AdapterRegistry(settings.adapters_dir).current()
    except RegistryError as exc:
        return {"error": str(exc)}
    if current is None:
        return None
    lineage = current.lineage
    metrics = lineage.get("metrics") or {}
    base, adapter = metrics.get("base") or {}, metrics.get("adapter") or {}
    rows = [{"metric": name, "base": base.get(name), "adapter": adapter.get(name), "gated": name in GATE_METRICS}
            for name in dict.fromkeys((*GATE_METRICS, *COMPARED_METRICS)) if name in base or name in adapter]
    # The adapter it replaced, measured on the same records when it was trained (champion/challenger).
    champion = metrics.get("champion") or {}
    gate = None
    if base and adapter:
        try:
            passed, reasons = promotion_gate(base, adapter, champion.get("metrics"))
            gate = {"passed": passed, "reasons": reasons}
        except (KeyError, TypeError, ValueError):
            gate = None
    return {"version_id": current.version_id, "created_at": lineage.get("created_at"),
            "base_model": lineage.get("base_model"), "dataset_version": lineage.get("dataset_version"),
            "eval_records": metrics.get("eval_records"), "metrics": rows, "gate": gate,
            "champion_version": champion.get("version_id")}


def install(app: FastAPI, settings: Settings, labels: LabelSpace, answer_request, engine_call, queued_answer) -> None:
    """Add the console's pages and its ``/v1/console`` API to ``app``.

    ``answer_request``: the API's request model (ticket, customer_id, history); ``engine_call(fn)``: runs
    ``fn`` with the API's error mapping (404 unknown customer, 503 + Retry-After while Weaviate is down);
    ``queued_answer(request,
    ticket, customer_id, history)``: awaits (retrieved, result) from the API's batching queue, with its
    error mapping (404 unknown customer, 503 + Retry-After while Weaviate is down or the queue is full),
    or None when the client has gone."""
    from fastapi.staticfiles import StaticFiles

    templates = _environment()
    answers = AnswerLog()
    feedback = FeedbackFile(settings.behaviour_dir)
    app.mount(STATIC_URL, StaticFiles(directory=HERE / "static"), name="console-static")

    def page(template: str, title: str):
        def render(request: Request) -> HTMLResponse:
            html = templates.get_template(template).render(title=title, static=STATIC_URL, api=CONSOLE_API,
                                                           path=request.url.path)
            return HTMLResponse(html, headers=PAGE_HEADERS)
        return render

    for route, (template, title) in PAGES.items():
        app.add_api_route(route, page(template, title), methods=["GET"], include_in_schema=False,
                          response_class=HTMLResponse, name=f"console:{template}")

    @app.get(f"{CONSOLE_API}/meta", tags=["console"])
    def meta() -> dict:
        """What the console's forms are built from: the answer schema, its field order, the label space
        and the customers (account files)."""
        people, error = customers(settings)
        schema = answer_json_schema(labels)
        return {
            "schema": schema,
            "field_order": [name for name in FIELD_ORDER if name in schema.get("properties", {})],
            "citations_field": CITATIONS_FIELD,
            "labels": {"company": labels.company, "sentiments": labels.sentiments, "categories": labels.categories,
                       "escalation_levels": labels.escalation_levels},
            "customers": people, "customers_error": error, "actions": ACTIONS,
        }

    @app.post(f"{CONSOLE_API}/answer", tags=["console"], dependencies=[Depends(same_origin)])
    async def console_answer(body: answer_request, request: Request):  # type: ignore[valid-type]
        # (no ``from __future__ import annotations`` in this module: FastAPI reads this annotation at run time)
        """Answer a ticket like ``/v1/answer`` (in the same batching queue), returning what the model saw
        (each passage's text) and an ``answer_id`` that a review refers to."""
        history = [{"role": t.role, "content": t.content} for t in body.history]
        queued = await queued_answer(request, body.ticket, body.customer_id, history)
        if queued is None:
            return Response(status_code=CLIENT_CLOSED)
        got, result = queued
        knowledge = knowledge_version(settings)
        context = [{"id": p.short_id, "source": p.source, "text": p.text} for p in got.passages]
        cited = set(result.answer.get(CITATIONS_FIELD) or [])
        passages = []
        for passage in got.passages:
            hit = got.hits[passage.short_id]
            passages.append({"id": passage.short_id, "source": passage.source, "doc_id": hit.doc_id,
                             "title": hit.title, "section": hit.section, "text": hit.text, "tenant": hit.tenant,
                             "chunk_id": hit.chunk_id, "similarity": None if hit.similarity is None else
                             round(hit.similarity, 3), "cited": passage.short_id in cited})
        pending = answers.add(ticket=body.ticket, customer_id=body.customer_id, history=history, context=context,
                              answer=result.answer, adapter_version=result.adapter_version,
                              knowledge_version=knowledge["version"])
        return {
            "answer_id": pending.answer_id,
            "answer": result.answer,
            "decision": decision_of(result.answer),
            "passages": passages,
            "sources": [p for p in passages if p["cited"]],
            "adapter_version": result.adapter_version,
            "knowledge": knowledge,
            "collection": result.collection,
            "timing_ms": {"retrieval": round(result.retrieval_ms, 1), "generation": round(result.generation_ms, 1),
                          # how long it waited in the API's batching queue (None: it did not go through it)
                          "queue": None if result.queue_ms is None else round(result.queue_ms, 1)},
            "generated_tokens": result.generated_tokens,
            "guards": result.guards,
            "dropped_citations": result.dropped_citations,
        }

    @app.post(f"{CONSOLE_API}/reviews", tags=["console"], status_code=201, dependencies=[Depends(same_origin)])
    def review(body: ReviewRequest):
        """Approve, correct or mark "should not have answered": one validated behaviour record appended to
        ``data/behaviour/reviewed_feedback.jsonl``. A refused review writes nothing (422 + field, reason)."""
        try:
            pending = answers.claim(body.answer_id)
        except ReviewRefused as exc:
            return JSONResponse({"detail": str(exc), "problems": exc.problems}, status_code=exc.status)
        record_id = None
        try:
            record = build_record(pending, body.action, body.reviewer, labels, body.answer, body.note)
            appended = feedback.append(record, labels)
            record_id = appended.record_id
        except ReviewRefused as exc:
            return JSONResponse({"detail": str(exc), "problems": exc.problems}, status_code=exc.status)
        finally:
            answers.release(pending, record_id)
        return {"record_id": appended.record_id, "line": appended.line, "file": f"data/behaviour/{feedback.path.name}",
                "action": body.action, "answer": record["answer"], "decision": decision_of(record["answer"]), "changed_fields": record["review"]["changed_fields"],
                "earlier_review_lines": appended.earlier_review_lines}

    @app.get(f"{CONSOLE_API}/loop", tags=["console"])
    def loop() -> dict:
        """Reviewed examples, how many the promoted adapter has not been trained on, its gate figures."""
        registry = AdapterRegistry(settings.adapters_dir)
        try:
            current = registry.current()
        except RegistryError:
            current = None
        files = find_behaviour_files(settings.behaviour_dir)
        return {**loop_status(settings.behaviour_dir, labels, current), "promoted": promoted_summary(settings),
                "behaviour_data_version": dataset_version(files) if files else None}

    @app.get(f"{CONSOLE_API}/knowledge", tags=["console"])
    def knowledge(request: Request) -> dict:
        """Documents indexed, the last ingest, files that failed to parse and why, tenants per customer."""
        return engine_call(lambda: knowledge_status(request.app.state.client, settings))

    @app.get(f"{CONSOLE_API}/documents/{{doc_id:path}}", tags=["console"])
    def document(doc_id: str, request: Request,
                 tenant: str | None = Query(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")) -> dict:
        """One document's passages, in reading order (an account: from its customer's tenant only)."""
        view = engine_call(lambda: document_view(request.app.state.client, settings, doc_id, tenant))
        if view is None:
            raise HTTPException(status_code=404, detail=f"no indexed document {doc_id!r}")
        return view
