"""The lec model server: the challenge's `/process`, `/tokenize`, `/decode` over FastAPI (+ `/health`), and the
OpenAI API's `/v1/models`, `/v1/completions`, `/v1/chat/completions` on the same batcher (lec/serve/openai_api.py).

What a client can count on (tests/serve/test_app.py, and a schemathesis fuzz of this app's own OpenAPI schema):
- every 422 of a challenge endpoint has FastAPI's standard body, `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}` (the
  `HTTPValidationError` of `/openapi.json`), whether pydantic or the model refused the request;
- every refusal of a `/v1` endpoint has the OpenAI API's shape, `{"error": {"message", "type", "param", "code"}}`;
- a body over `serve.max_request_bytes` gets 413 before it is parsed or tokenized;
- with `serve.api_key`, every endpoint but `/health` needs `Authorization: Bearer <key>` (401 otherwise);
- a client that disconnects takes its request out of the running batch at the next decoding step.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any, Dict, List, Optional

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from lec.serve.api import (
    DecodeRequest,
    DecodeResponse,
    ProcessRequest,
    ProcessResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from lec.serve import openai_api
from lec.serve.batcher import Batcher
from lec.serve.engine import Engine, RequestError

log = logging.getLogger(__name__)


def problem(loc: List[Any], msg: str, kind: str = "value_error") -> Dict[str, Any]:
    """One entry of FastAPI's standard 422 `detail` list."""
    return {"loc": loc, "msg": msg, "type": kind}


def create_app(engine: Engine, name: str = "lec", max_batch_size: int = 8, batch_wait_ms: float = 5.0,
               api_key: Optional[str] = None, max_request_bytes: Optional[int] = None) -> Any:  # fmt: skip
    """The ASGI app (FastAPI inside the request-size limit)."""
    app = FastAPI(title=f"lec model server ({name})")
    batcher = Batcher(engine, max_batch_size, batch_wait_ms)
    app.state.batcher = batcher
    bearer = HTTPBearer(auto_error=False)
    extra = {**({401: {"description": "no or a wrong Bearer token (serve.api_key)"}} if api_key else {}),
             **({413: {"description": "body over serve.max_request_bytes"}} if max_request_bytes else {})}

    def authorised(creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if api_key is None:
            return
        if creds is None or not secrets.compare_digest(creds.credentials.encode(), api_key.encode()):
            raise HTTPException(401, "a Bearer token is needed (serve.api_key)", {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if openai_api.is_openai(request):
            return openai_api.validation_error(exc.errors())
        # FastAPI's own shape without `input`/`ctx` (optional in its schema): the input may hold what cannot be
        # written back as UTF-8 (a lone surrogate) or be megabytes long.
        return JSONResponse(status_code=422, content={"detail": [problem(list(e["loc"]), e["msg"], e["type"])
                                                                 for e in exc.errors()]})  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if openai_api.is_openai(request):  # OpenAI clients read {"error": {"message", …}}
            status = 400 if exc.status_code in (400, 422) else exc.status_code
            return JSONResponse(status_code=status, content=openai_api.error_body(str(exc.detail)),
                                headers=getattr(exc, "headers", None))  # fmt: skip
        if exc.status_code == 400:  # FastAPI's only 400: a body that is not UTF-8 (invalid JSON is its 422 already)
            return JSONResponse(status_code=422, content={"detail": [problem(["body"], "the body is not UTF-8 JSON",
                                                                             "json_invalid")]})  # fmt: skip
        return await http_exception_handler(request, exc)

    @app.exception_handler(openai_api.OpenAIError)
    async def _refused(_: Request, exc: openai_api.OpenAIError) -> JSONResponse:
        return openai_api.error_response(exc)

    @app.get("/health")
    def health() -> dict:
        steps = batcher.steps
        return {"status": "ok", "model": name, "context": engine.context, "wrapper_tokens": engine.wrapper_tokens,
                "steps": steps, "mean_batch_size": batcher.row_steps / steps if steps else 0.0,
                "running": batcher.running, "cancelled": batcher.cancelled,
                "prefix_cache": engine.prefix.stats() if engine.prefix else None}  # fmt: skip

    @app.post("/process", responses=extra, response_model=ProcessResponse, dependencies=[Depends(authorised)])
    async def process(req: ProcessRequest, request: Request) -> Response:
        try:
            row = await run_in_threadpool(engine.row, req)  # tokenizing never holds up the event loop or the batch
        except RequestError as err:
            raise HTTPException(422, [problem(["body", err.field], str(err))]) from err
        # A client that goes away takes its row out of the batch at the next step; 499 is nginx's "client closed
        # request", never sent to anyone. A failed decoding step raises here (500: the model failed, not the request).
        if not await batcher.wait([row], request.is_disconnected):
            return Response(status_code=499)
        # The engine builds exactly ProcessResponse's fields (a test checks it against the schema); serialising the
        # dict directly skips re-validating a few hundred token entries per request.
        result = await run_in_threadpool(engine.respond, row)
        return Response(json.dumps(result), media_type="application/json")

    @app.post("/tokenize", responses=extra, response_model=TokenizeResponse, dependencies=[Depends(authorised)])
    def tokenize(req: TokenizeRequest) -> dict:
        start = time.perf_counter()
        tokens = engine.tokenize(req.text, req.truncation, req.max_length)
        return {"tokens": tokens, "request_time": time.perf_counter() - start}

    @app.post("/decode", responses=extra, response_model=DecodeResponse, dependencies=[Depends(authorised)])
    def decode(req: DecodeRequest) -> dict:
        start = time.perf_counter()
        vocab = len(engine.tokenizer)
        bad = [i for i, t in enumerate(req.tokens) if not 0 <= t < vocab]
        if bad:
            raise HTTPException(422, [problem(["body", "tokens", i], f"token id {req.tokens[i]} is outside the "
                                              f"vocabulary [0, {vocab})") for i in bad[:10]])  # fmt: skip
        return {"text": engine.decode(req.tokens), "request_time": time.perf_counter() - start}

    openai_api.add_routes(app, engine, batcher, name, [Depends(authorised)], extra)
    return BodyLimit(app, max_request_bytes) if max_request_bytes else app


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is answered 413 before the app reads it. A declared
    Content-Length is checked at once (the server enforces that the body matches it); a chunked body is read up
    to the limit and handed on whole."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def __getattr__(self, attr: str) -> Any:  # app.state, app.openapi(), … of the FastAPI app inside
        return getattr(self.app, attr)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                return await self._too_large(send)
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._too_large(send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # later reads: a disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send) -> None:
        detail = json.dumps({"detail": f"request body over {self.max_bytes} bytes (serve.max_request_bytes)"})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})  # fmt: skip
        await send({"type": "http.response.body", "body": detail.encode()})
