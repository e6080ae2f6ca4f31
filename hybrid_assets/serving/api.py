"""HTTP API (FastAPI). Request/response models come from the one answer schema.

POST /v1/answer, GET /healthz, GET /v1/adapters. Bodies over ``MAX_BODY_BYTES`` get 413; with
HYBRID_API_TOKEN set every /v1 request needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import os
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from hybrid_assets.settings import Settings, load_settings

MAX_BODY_BYTES = 32 * 1024


class Turn(BaseModel):
    role: Literal["customer", "agent"]
    content: str = Field(min_length=1, max_length=4000)


class AnswerRequest(BaseModel):
    ticket: str = Field(min_length=1, max_length=8000, description="The customer's message")
    customer_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    history: list[Turn] = Field(default_factory=list, max_length=20)


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


def create_app(settings: Settings | None = None, engine=None) -> FastAPI:
    """Build the app; tests pass a prepared engine, production builds one from settings."""
    settings = settings or load_settings()
    from hybrid_assets.schema import response_model
    from hybrid_assets.serving.engine import AnswerEngine, load_labels

    labels = load_labels(settings)
    answer_model = response_model(labels)

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
        from hybrid_assets.store.client import connect

        app.state.engine = engine or AnswerEngine(settings, labels)
        app.state.client = connect(settings)
        try:
            yield
        finally:
            app.state.client.close()

    app = FastAPI(title="hybrid_assets", version="0.1.0", lifespan=lifespan,
                  description="Support answers grounded in Weaviate, shaped by a fine-tuned adapter.")

    @app.middleware("http")
    async def limit_body_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

    def require_token(request: Request) -> None:
        token = os.environ.get("HYBRID_API_TOKEN")
        if not token:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token")

    @app.get("/healthz")
    def healthz(request: Request) -> dict:
        from hybrid_assets.store.server import is_ready

        url = settings.weaviate_url or f"http://127.0.0.1:{settings.weaviate_http_port}"
        return {"status": "ok", "weaviate_ready": is_ready(url, timeout=2),
                "adapter_version": request.app.state.engine.adapter_version}

    @app.get("/v1/adapters", dependencies=[Depends(require_token)])
    def adapters() -> dict:
        from hybrid_assets.behaviour.registry import AdapterRegistry

        registry = AdapterRegistry(settings.adapters_dir)
        current = registry.current()
        return {
            "current": current.version_id if current else None,
            "versions": [v.to_dict() for v in registry.list_versions()],
        }

    @app.post("/v1/answer", response_model=AnswerResponse, dependencies=[Depends(require_token)])
    def answer(body: AnswerRequest, request: Request):
        from hybrid_assets.knowledge.pipeline import UnknownCustomer
        from hybrid_assets.store.server import WeaviateUnavailable

        try:
            result = request.app.state.engine.answer(
                request.app.state.client, body.ticket, body.customer_id,
                [{"role": t.role, "content": t.content} for t in body.history],
            )
        except UnknownCustomer as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        except WeaviateUnavailable as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None
        return result.to_dict()

    return app
