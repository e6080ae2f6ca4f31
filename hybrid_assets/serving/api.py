"""HTTP API (FastAPI). Request/response models come from the one answer schema.

POST /v1/answer, GET /v1/adapters, GET /healthz, GET /docs (Swagger UI) and /redoc; the OpenAI shape
(POST /v1/chat/completions, GET /v1/models, GET /v1/answer-schema) in serving/openai_compat.py; the agent
console (pages at /, /knowledge, /loop; its API under /v1/console) in serving/console.py.

Order of checks for a request, each answered before the next one runs:

1. ``RequestGuard`` (a pure ASGI middleware, so nothing has read the body yet): with HYBRID_API_TOKEN
   set, every path under /v1 needs ``Authorization: Bearer <token>`` -> 401 without reading the body;
   a body over ``MAX_BODY_BYTES`` -> 413, from the Content-Length header or, for a chunked body, as
   soon as the bytes counted while they arrive cross the limit (the rest is never read; the connection
   is closed).
2. Body validation -> 422 naming the field (a whitespace-only ``ticket`` included).
3. The batching scheduler (``serving/batcher.py``): a queue place is taken before retrieval; with
   ``HYBRID_SERVE_QUEUE_SIZE`` requests already waiting -> 503 with ``Retry-After`` and a JSON error.
4. The engine: retrieval in the request's thread (an unknown customer -> 404; Weaviate unreachable ->
   503 with ``Retry-After``), then the request waits for the next batch (up to
   ``HYBRID_SERVE_BATCH_SIZE`` rows, one worker thread owns the model). A client that disconnects
   while it waits leaves the queue and is never generated; one that disconnects while its batch runs
   gets nothing, its row finishes with the batch (or the batch stops early when every client left).

``/v1/answer`` and ``/v1/chat/completions`` (streaming too: it streams the batched answer) go through
the scheduler, and so do the agent console's answers.

``/healthz`` answers 503 (saying what is down) while Weaviate is not ready, so a load balancer stops
routing to this instance. The docs pages load Swagger UI / ReDoc from files served by this app (the
``fastapi-offline`` package ships them), never from a CDN.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field, field_validator

from hybrid_assets.behaviour.registry import AdapterRegistry
from hybrid_assets.knowledge.pipeline import UnknownCustomer
from hybrid_assets.schema import answer_json_schema, response_model
from hybrid_assets.serving import console, openai_compat
from hybrid_assets.models.base_model import default_serve_batch_size
from hybrid_assets.serving.batcher import BatchScheduler, QueueFull, SchedulerStopped
from hybrid_assets.serving.engine import AnswerEngine, load_labels
from hybrid_assets.settings import Settings, env_value, load_settings
from hybrid_assets.store.client import connect
from hybrid_assets.store.server import WeaviateUnavailable, is_ready

MAX_BODY_BYTES = 32 * 1024
PROTECTED_PREFIX = "/v1"
DOCS_STATIC_URL = "/docs-static"
RETRY_AFTER_S = 10  # what a client or load balancer is told to wait while Weaviate is down
DISCONNECT_POLL_S = 0.25  # how often a request waiting for its batch checks that its client is still there
RETRIEVAL_THREADS = 2  # requests retrieving at once; the others wait (their queue places are taken)
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; never reaches the client


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


class Turn(BaseModel):
    role: Literal["customer", "agent"]
    content: str = Field(min_length=1, max_length=4000)


class AnswerRequest(BaseModel):
    ticket: str = Field(min_length=1, max_length=8000, description="The customer's message")
    customer_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    history: list[Turn] = Field(default_factory=list, max_length=20)

    @field_validator("ticket")
    @classmethod
    def _ticket_has_text(cls, value: str) -> str:
        # The same test the engine applies (str.strip: Unicode whitespace too), so it never sees one.
        if not value.strip():
            raise ValueError("ticket must contain text, not only whitespace")
        return value


class Source(BaseModel):
    id: str
    chunk_id: str
    doc_id: str
    section: str
    tenant: str | None


class RetrievedChunk(BaseModel):
    id: str
    chunk_id: str
    doc_id: str
    tenant: str | None
    similarity: float | None


# -- the ASGI guard: auth and body size before anything reads the body -------------------------------

async def _send_json(send, status: int, payload: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    # the request body is left unread: close rather than parse what follows it
                    (b"connection", b"close"), *headers],
    })
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Pure ASGI middleware: bearer-token check for /v1 paths and a streaming request-body limit."""
    def __init__(self, app, max_body_bytes: int = MAX_BODY_BYTES, protected_prefix: str = PROTECTED_PREFIX):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.protected_prefix = protected_prefix

    def _protected(self, scope) -> bool:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        return path == self.protected_prefix or path.startswith(self.protected_prefix + "/")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name.lower(), value)

        token = env_value("HYBRID_API_TOKEN")  # read per request (environment, then .env): rotating it needs no restart
        if token and self._protected(scope):
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, f"Bearer {token}".encode()):
                await _send_json(send, 401, {"detail": "missing or wrong bearer token"},
                                 [(b"www-authenticate", b"Bearer")])
                return

        too_large = {"detail": f"request body over {self.max_body_bytes} bytes"}
        length = headers.get(b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_body_bytes:
            await _send_json(send, 413, too_large)
            return

        received = 0
        rejected = False
        response_started = False

        async def counting_receive():
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    rejected = True
                    if not response_started:
                        await _send_json(send, 413, too_large)
                    return {"type": "http.disconnect"}  # the app stops reading; nothing more is buffered
            return message

        async def guarded_send(message) -> None:
            nonlocal response_started
            if rejected:
                return  # the 413 is the response; drop what the app makes of the "disconnect"
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not rejected:
                raise  # a rejected body makes the app fail on a disconnect: that is expected


# -- Weaviate outages ---------------------------------------------------------------------------------

def _weaviate_url(settings: Settings) -> str:
    return settings.weaviate_url or f"http://127.0.0.1:{settings.weaviate_http_port}"


def _weaviate_down(exc: BaseException, url: str) -> bool:
    """True when ``exc`` means Weaviate cannot be reached (not a bug in the query)."""
    try:
        from weaviate.exceptions import (
            WeaviateBaseError,
            WeaviateConnectionError,
            WeaviateGRPCUnavailableError,
            WeaviateTimeoutError,
        )
    except ImportError:  # pragma: no cover - the client is a pinned dependency
        return isinstance(exc, WeaviateUnavailable)
    if isinstance(exc, (WeaviateUnavailable, WeaviateConnectionError, WeaviateGRPCUnavailableError,
                        WeaviateTimeoutError)):
        return True
    # Other client errors (e.g. a gRPC query error wrapping "connection refused"): ask the server.
    return isinstance(exc, WeaviateBaseError) and not is_ready(url, timeout=2)


def _docs_static_dir() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).resolve().parent / "static"


def create_app(settings: Settings | None = None, engine=None) -> FastAPI:
    """Build the app; tests pass a prepared engine, production builds one from settings."""
    settings = settings or load_settings()
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.staticfiles import StaticFiles

    labels = load_labels(settings)
    answer_model = response_model(labels)
    weaviate_url = _weaviate_url(settings)

    class AnswerResponse(BaseModel):
        answer: answer_model  # type: ignore[valid-type]
        sources: list[Source]
        adapter_version: str | None
        collection: str
        timing_ms: dict[str, float]
        generated_tokens: int
        dropped_citations: list[str]
        guards: list[str]
        retrieved: list[RetrievedChunk]

    # /healthz reads Weaviate's readiness in threads of its own: the shared thread pool may be busy with
    # the retrievals of many waiting requests, and a health check must not queue behind them.
    health_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="healthz")
    # Retrieval (query embedding + hybrid search) is CPU work: more threads than cores only fight for
    # the GIL, and 50 at once stalled the event loop (and /healthz) for over a second here.
    retrieval_pool = ThreadPoolExecutor(max_workers=RETRIEVAL_THREADS, thread_name_prefix="retrieval")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine = engine or AnswerEngine(settings, labels)
        app.state.client = connect(settings)
        # Late-bound, so a test may swap app.state.engine; the worker thread is the model's only user here.
        app.state.scheduler = BatchScheduler(lambda items, stop: app.state.engine.answer_prepared(items, stop),
                                             settings.serve_batch_size or default_serve_batch_size(),
                                             settings.serve_queue_size)
        app.state.scheduler.start()
        try:
            yield
        finally:
            app.state.scheduler.stop()
            health_pool.shutdown(wait=False, cancel_futures=True)
            retrieval_pool.shutdown(wait=False, cancel_futures=True)
            app.state.client.close()

    app = FastAPI(title="hybrid_assets", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Support answers grounded in Weaviate, shaped by a fine-tuned adapter.")
    app.add_middleware(RequestGuard, max_body_bytes=MAX_BODY_BYTES)

    # Documents the bearer token in OpenAPI (the Authorize button); the check itself is RequestGuard's.
    bearer = HTTPBearer(auto_error=False, description="HYBRID_API_TOKEN, when the server sets one")

    # -- docs, served offline ---------------------------------------------------------------------
    app.mount(DOCS_STATIC_URL, StaticFiles(directory=_docs_static_dir()), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{app.swagger_ui_oauth2_redirect_url}",
            swagger_js_url=f"{root}{DOCS_STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_STATIC_URL}/favicon.png",
        )

    @app.get(app.swagger_ui_oauth2_redirect_url, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )

    # -- API ----------------------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz(request: Request):
        ready = await asyncio.get_running_loop().run_in_executor(health_pool, is_ready, weaviate_url, 2)
        body = {"status": "ok" if ready else "unavailable", "weaviate_ready": ready,
                "adapter_version": request.app.state.engine.adapter_version}
        scheduler = getattr(request.app.state, "scheduler", None)
        if scheduler is not None:
            body["queue"] = scheduler.snapshot()
        if ready:
            return body
        body["detail"] = f"Weaviate at {weaviate_url} is not ready: answers cannot be served"
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.get("/v1/adapters", dependencies=[Depends(bearer)])
    def adapters() -> dict:
        registry = AdapterRegistry(settings.adapters_dir)
        current = registry.current()
        return {
            "current": current.version_id if current else None,
            "versions": [v.to_dict() for v in registry.list_versions()],
        }

    def engine_call(fn):
        """``fn()`` with the API's error mapping (404 unknown customer, 503 + Retry-After Weaviate down)."""
        try:
            return fn()
        except UnknownCustomer as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        except Exception as exc:
            if _weaviate_down(exc, weaviate_url):
                raise HTTPException(
                    status_code=503,
                    detail=f"Weaviate at {weaviate_url} cannot be reached; retry later ({type(exc).__name__})",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                ) from None
            raise

    async def answer_in_batch(request: Request, ticket: str, customer_id: str | None, history: list[dict]):
        """One answer through the batching scheduler, with the API's error mapping: (what was retrieved,
        the result); ``ClientGone`` when the client disconnects first (its queue place is freed, it is
        not generated). Every answer of this app, the console's too, takes a place in this queue, so one
        worker owns the model and the queue bound holds for all of them."""
        scheduler: BatchScheduler = request.app.state.scheduler
        try:
            slot = scheduler.reserve()
        except QueueFull as exc:
            raise HTTPException(status_code=503, detail=str(exc),
                                headers={"Retry-After": str(exc.retry_after_s)}) from None
        except SchedulerStopped as exc:
            raise HTTPException(status_code=503, detail=str(exc), headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        try:
            payload = {"ticket": ticket, "customer_id": customer_id, "history": history}
            prepared = await asyncio.get_running_loop().run_in_executor(
                retrieval_pool, engine_call, lambda: request.app.state.engine.prepare(request.app.state.client, payload))
            waiting = asyncio.wrap_future(scheduler.enqueue(slot, prepared))
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_S)
                if done:
                    break
                if await request.is_disconnected():
                    raise ClientGone()
            try:
                result = waiting.result()
            except SchedulerStopped as exc:
                raise HTTPException(status_code=503, detail=str(exc),
                                    headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        except BaseException:  # client gone, request cancelled, retrieval failed: free the place
            scheduler.cancel(slot)
            raise
        result.queue_ms = (slot.started_at - slot.enqueued_at) * 1000
        return prepared.retrieved, result

    @app.post("/v1/answer", response_model=AnswerResponse, dependencies=[Depends(bearer)])
    async def answer(body: AnswerRequest, request: Request):
        history = [{"role": t.role, "content": t.content} for t in body.history]
        try:
            _, result = await answer_in_batch(request, body.ticket, body.customer_id, history)
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        return result.to_dict()

    # -- the OpenAI shape (serving/openai_compat.py) ------------------------------------------------------
    openai_compat.install_error_shape(app)
    def promoted_version() -> str | None:
        current = AdapterRegistry(settings.adapters_dir).current()
        return current.version_id if current else None

    @app.get("/v1/models", dependencies=[Depends(bearer)])
    def models() -> dict:
        return openai_compat.models_body(promoted_version(), int(settings.adapters_dir.stat().st_mtime)
                                         if settings.adapters_dir.exists() else 0)

    @app.get("/v1/answer-schema", dependencies=[Depends(bearer)])
    def answer_schema() -> dict:
        """The JSON schema every answer follows (what ``response_format.json_schema`` may name)."""
        return answer_json_schema(labels)

    @app.post("/v1/chat/completions", dependencies=[Depends(bearer)])
    async def chat_completions(body: openai_compat.ChatCompletionRequest, request: Request):
        openai_compat.check_model(body.model, promoted_version())
        openai_compat.check_response_format(body.response_format, labels)
        ticket, history = openai_compat.ticket_and_history(body.messages)
        try:
            _, result = await answer_in_batch(request, ticket, body.customer_id, history)
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        model = openai_compat.served_model_id(result.adapter_version)
        if body.stream:  # the batched, checked answer, sent as chunks (the tokenizer is loaded by now)
            return openai_compat.stream_body(result, model, getattr(request.app.state.engine, "tokenizer", None))
        return openai_compat.completion_body(result, model)

    # -- the agent console (serving/console.py): pages at /, /knowledge, /loop; its API under /v1/console ---
    async def queued_answer(request: Request, ticket: str, customer_id: str | None, history: list[dict]):
        """``answer_in_batch`` for the console: None when the client has gone."""
        try:
            return await answer_in_batch(request, ticket, customer_id, history)
        except ClientGone:
            return None

    console.install(app, settings, labels, AnswerRequest, engine_call, queued_answer)

    return app
