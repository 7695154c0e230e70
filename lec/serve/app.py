"""The lec model server: the challenge's `/process`, `/tokenize`, `/decode` over FastAPI (+ `/health`).

What a client can count on (tests/serve/test_app.py, and a schemathesis fuzz of this app's own OpenAPI schema):
- every 422 has FastAPI's standard body, `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}` (the
  `HTTPValidationError` of `/openapi.json`), whether pydantic or the model refused the request;
- a body over `serve.max_request_bytes` gets 413 before it is parsed or tokenized;
- with `serve.api_key`, every endpoint but `/health` needs `Authorization: Bearer <key>` (401 otherwise);
- a client that disconnects takes its request out of the running batch at the next decoding step.
"""

from __future__ import annotations

import asyncio
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
from lec.serve.batcher import Batcher
from lec.serve.engine import Engine, RequestError

log = logging.getLogger(__name__)
DISCONNECT_POLL_S = 0.05  # how often a waiting request checks whether its client is still there


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
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own shape without `input`/`ctx` (optional in its schema): the input may hold what cannot be
        # written back as UTF-8 (a lone surrogate) or be megabytes long.
        return JSONResponse(status_code=422, content={"detail": [problem(list(e["loc"]), e["msg"], e["type"])
                                                                 for e in exc.errors()]})  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:  # FastAPI's only 400: a body that is not UTF-8 (invalid JSON is its 422 already)
            return JSONResponse(status_code=422, content={"detail": [problem(["body"], "the body is not UTF-8 JSON",
                                                                             "json_invalid")]})  # fmt: skip
        return await http_exception_handler(request, exc)

    @app.get("/health")
    def health() -> dict:
        steps = batcher.steps
        return {"status": "ok", "model": name, "context": engine.context, "wrapper_tokens": engine.wrapper_tokens,
                "steps": steps, "mean_batch_size": batcher.row_steps / steps if steps else 0.0,
                "running": batcher.running, "cancelled": batcher.cancelled}  # fmt: skip

    @app.post("/process", responses=extra, response_model=ProcessResponse, dependencies=[Depends(authorised)])
    async def process(req: ProcessRequest, request: Request) -> Response:
        try:
            row = await run_in_threadpool(engine.row, req)  # tokenizing never holds up the event loop or the batch
        except RequestError as err:
            raise HTTPException(422, [problem(["body", err.field], str(err))]) from err
        done = asyncio.wrap_future(batcher.enqueue(row))
        while not done.done():
            await asyncio.wait({done}, timeout=DISCONNECT_POLL_S)
            if not done.done() and await request.is_disconnected():
                batcher.cancel(row)  # leaves the batch at the next step; nobody is there to answer
                return Response(status_code=499)  # nginx's "client closed request"; never sent to anyone
        await done  # a failed decoding step raises here (500: the model failed, not the request)
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
