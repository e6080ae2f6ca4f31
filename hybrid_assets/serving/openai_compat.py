"""The OpenAI API shape over the same engine: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Users who already call models through the OpenAI shape (the ``openai`` SDK, LangChain, LlamaIndex)
point their client's ``base_url`` at this server. What maps to what:

- ``messages``: the last ``user`` message is the ticket; earlier ``user`` / ``assistant`` messages are
  the conversation so far (customer / agent turns). ``system`` messages are not used: the adapter was
  trained with the project's own system prompt, and answering under another would not be the model
  that passed the gate.
- the customer id travels as an extra field, ``customer_id`` (``extra_body={"customer_id": ...}``
  with the SDK); the cited sources come back in the extra field ``sources`` (and ``retrieved``).
- the assistant message's ``content`` is the strict answer JSON. ``response_format`` may be ``text``,
  ``json_object`` or ``json_schema``; a ``json_schema`` must be the answer schema (``GET
  /v1/answer-schema``), since decoding is constrained to it - any other schema is a 422.
- ``model``: the promoted adapter's version id (or ``hybrid-assets`` for "whatever is promoted", or
  ``base`` when nothing is); the response names the version that answered. ``GET /v1/models`` lists it.
- ``usage`` counts prompt and completion tokens.
- ``stream=true`` sends ``chat.completion.chunk`` server-sent events and ``data: [DONE]``, as the SDK
  expects. The chunks carry the answer after the grounding checks, so a client never receives text
  that a guard then replaced.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Literal

from fastapi import HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hybrid_assets.schema import answer_json_schema

ALIAS = "hybrid-assets"  # "the promoted adapter, whichever it is"
BASE = "base"
STREAM_PIECE_TOKENS = 4  # tokens per streamed chunk


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients send name, tool_calls, ...: not used

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # the content-parts form: keep the text parts
            return "\n".join(part.get("text", "") for part in self.content if part.get("type") == "text")
        return self.content or ""


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, top_p, ...: decoding is greedy and constrained

    model: str = Field(description=f"The promoted adapter's version id, '{ALIAS}' or '{BASE}'")
    messages: list[ChatMessage] = Field(min_length=1, max_length=40)
    stream: bool = False
    response_format: ResponseFormat | None = None
    customer_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
                                    description="Extra field: search this customer's own account data too")

    @field_validator("messages")
    @classmethod
    def _ends_with_a_ticket(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user" or not messages[-1].text().strip():
            raise ValueError("the last message must be a non-empty 'user' message: the ticket")
        if len(messages[-1].text()) > 8000:
            raise ValueError("the ticket (last user message) is over 8000 characters")
        return messages


def ticket_and_history(messages: list[ChatMessage]) -> tuple[str, list[dict]]:
    roles = {"user": "customer", "assistant": "agent"}
    history = [{"role": roles[m.role], "content": m.text()[:4000]} for m in messages[:-1]
               if m.role in roles and m.text().strip()][-20:]
    return messages[-1].text(), history


def check_response_format(response_format: ResponseFormat | None, labels) -> None:
    if response_format is None or response_format.type != "json_schema":
        return
    given = (response_format.json_schema or {}).get("schema")
    if given is not None and given != answer_json_schema(labels):
        raise HTTPException(status_code=422, detail=(
            "response_format.json_schema: only the answer schema is supported (decoding is constrained to it); "
            "GET /v1/answer-schema returns it, or omit response_format"))


def served_model_id(engine_version: str | None) -> str:
    return engine_version or BASE


def check_model(requested: str, promoted: str | None) -> None:
    allowed = {ALIAS, promoted or BASE}
    if requested not in allowed:
        raise HTTPException(status_code=404, detail=(
            f"model {requested!r} is not served here; available: {sorted(allowed)} (GET /v1/models)"))


def completion_body(result, model: str) -> dict:
    content = json.dumps(result.answer, ensure_ascii=False)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop" if result.complete else "length", "logprobs": None}],
        "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.generated_tokens,
                  "total_tokens": result.prompt_tokens + result.generated_tokens},
        "sources": result.sources,
        "retrieved": result.retrieved,
    }


def stream_body(result, model: str, tokenizer) -> StreamingResponse:
    """The answer as ``chat.completion.chunk`` events, a few tokens at a time, then ``[DONE]``."""
    body = completion_body(result, model)
    content = body["choices"][0]["message"]["content"]
    ids = tokenizer.encode(content, add_special_tokens=False) if tokenizer is not None else None
    if ids:
        pieces, start = [], 0  # decode growing prefixes, so multi-byte characters are never split
        for end in range(STREAM_PIECE_TOKENS, len(ids) + STREAM_PIECE_TOKENS, STREAM_PIECE_TOKENS):
            text = tokenizer.decode(ids[:end])
            pieces.append(text[start:])
            start = len(text)
        if "".join(pieces) != content:  # a tokenizer that does not round-trip: stream the characters
            pieces = [content[i:i + 16] for i in range(0, len(content), 16)]
    else:
        pieces = [content[i:i + 16] for i in range(0, len(content), 16)]

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        event = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"], "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"

    def events():
        yield chunk({"role": "assistant", "content": ""})
        for piece in pieces:
            if piece:
                yield chunk({"content": piece})
        yield chunk({}, body["choices"][0]["finish_reason"], usage=body["usage"], sources=body["sources"])
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


OPENAI_PATHS = ("/v1/chat/completions", "/v1/models")
ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error",
               422: "invalid_request_error", 503: "service_unavailable"}


def error_body(status: int, message: str, param: str | None = None) -> dict:
    """An error in the OpenAI shape, so SDKs show the message (``openai.NotFoundError: ... not served``)."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "api_error"), "param": param,
                      "code": None}}


def install_error_shape(app) -> None:
    """Errors of the OpenAI routes in the OpenAI shape; every other route keeps FastAPI's."""
    from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    def ours(request) -> bool:
        return request.url.path in OPENAI_PATHS

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        if not ours(request):
            return await http_exception_handler(request, exc)
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        if not ours(request):
            return await request_validation_exception_handler(request, exc)
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return JSONResponse(error_body(422, f"{param}: {first.get('msg')}" if param else first.get("msg", ""), param),
                            status_code=422)


def models_body(promoted: str | None, created: int) -> dict:
    data = [{"id": promoted or BASE, "object": "model", "created": created, "owned_by": "hybrid_assets"},
            {"id": ALIAS, "object": "model", "created": created, "owned_by": "hybrid_assets"}]
    return {"object": "list", "data": data}
