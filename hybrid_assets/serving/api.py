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
3. The engine: an unknown customer -> 404; Weaviate unreachable -> 503 with ``Retry-After``.

``/healthz`` answers 503 (saying what is down) while Weaviate is not ready, so a load balancer stops
routing to this instance. The docs pages load Swagger UI / ReDoc from files served by this app (the
``fastapi-offline`` package ships them), never from a CDN.
"""

from __future__ import annotations

import hmac
import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field, field_validator

from hybrid_assets.behaviour.registry import AdapterRegistry
from hybrid_assets.knowledge.pipeline import UnknownCustomer
from hybrid_assets.schema import answer_json_schema, response_model
from hybrid_assets.serving import console, openai_compat
from hybrid_assets.serving.engine import AnswerEngine, load_labels
from hybrid_assets.settings import Settings, env_value, load_settings
from hybrid_assets.store.client import connect
from hybrid_assets.store.server import WeaviateUnavailable, is_ready

MAX_BODY_BYTES = 32 * 1024
PROTECTED_PREFIX = "/v1"
DOCS_STATIC_URL = "/docs-static"
RETRY_AFTER_S = 10  # what a client or load balancer is told to wait while Weaviate is down


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

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine = engine or AnswerEngine(settings, labels)
        app.state.client = connect(settings)
        try:
            yield
        finally:
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
    def healthz(request: Request):
        ready = is_ready(weaviate_url, timeout=2)
        body = {"status": "ok" if ready else "unavailable", "weaviate_ready": ready,
                "adapter_version": request.app.state.engine.adapter_version}
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

    def run_engine(request: Request, ticket: str, customer_id: str | None, history: list[dict]):
        """One answer from the engine, with the API's error mapping."""
        return engine_call(lambda: request.app.state.engine.answer(request.app.state.client, ticket, customer_id,
                                                                   history))

    @app.post("/v1/answer", response_model=AnswerResponse, dependencies=[Depends(bearer)])
    def answer(body: AnswerRequest, request: Request):
        history = [{"role": t.role, "content": t.content} for t in body.history]
        return run_engine(request, body.ticket, body.customer_id, history).to_dict()

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
    def chat_completions(body: openai_compat.ChatCompletionRequest, request: Request):
        openai_compat.check_model(body.model, promoted_version())
        openai_compat.check_response_format(body.response_format, labels)
        ticket, history = openai_compat.ticket_and_history(body.messages)
        result = run_engine(request, ticket, body.customer_id, history)
        model = openai_compat.served_model_id(result.adapter_version)
        if body.stream:
            _, decoder = request.app.state.engine.loaded() if hasattr(request.app.state.engine, "loaded") \
                else (None, None)
            return openai_compat.stream_body(result, model, decoder.tokenizer if decoder else None)
        return openai_compat.completion_body(result, model)

    # -- the agent console (serving/console.py): pages at /, /knowledge, /loop; its API under /v1/console ---
    console.install(app, settings, labels, AnswerRequest, engine_call)

    return app
