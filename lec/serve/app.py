"""The lec model server: the challenge's `/process`, `/tokenize`, `/decode` over FastAPI (+ `/health`)."""

from __future__ import annotations

import json
import logging
import time

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

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


def create_app(engine: Engine, name: str = "lec", max_batch_size: int = 8, batch_wait_ms: float = 5.0) -> FastAPI:
    app = FastAPI(title=f"lec model server ({name})")
    batcher = Batcher(engine, max_batch_size, batch_wait_ms)
    app.state.batcher = batcher

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # One readable line per problem, e.g. "body.max_new_tokens: Input should be greater than or equal to 0".
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": "; ".join(problems), "errors": problems})

    @app.get("/health")
    def health() -> dict:
        steps = batcher.steps
        return {"status": "ok", "model": name, "context": engine.context, "wrapper_tokens": engine.wrapper_tokens,
                "steps": steps, "mean_batch_size": batcher.row_steps / steps if steps else 0.0}  # fmt: skip

    @app.post("/process", response_model=ProcessResponse)
    def process(req: ProcessRequest) -> Response:
        try:
            result = batcher.submit(req)
        except RequestError as err:
            raise HTTPException(status_code=422, detail=str(err)) from err
        # The engine builds exactly ProcessResponse's fields (a test checks it against the schema); serialising the
        # dict directly skips re-validating a few hundred token entries per request.
        return Response(json.dumps(result), media_type="application/json")

    @app.post("/tokenize", response_model=TokenizeResponse)
    def tokenize(req: TokenizeRequest) -> dict:
        start = time.perf_counter()
        tokens = engine.tokenize(req.text, req.truncation, req.max_length)
        return {"tokens": tokens, "request_time": time.perf_counter() - start}

    @app.post("/decode", response_model=DecodeResponse)
    def decode(req: DecodeRequest) -> dict:
        start = time.perf_counter()
        vocab = len(engine.tokenizer)
        bad = [t for t in req.tokens if not 0 <= t < vocab]
        if bad:
            raise HTTPException(status_code=422, detail=f"token ids out of range [0, {vocab}): {bad[:10]}")
        return {"text": engine.decode(req.tokens), "request_time": time.perf_counter() - start}

    return app
