"""The OpenAI API on the lec server: `/v1/models`, `/v1/completions`, `/v1/chat/completions`, decoded by the same
engine and continuous batcher as the challenge's `/process` (every prompt × `n` is one row of the running batch).

What each field does (the OpenAI API reference, https://platform.openai.com/docs/api-reference/completions, as
lm-evaluation-harness's `local-completions` / `local-chat-completions` models and the `openai` client send it):
- `prompt`: a string, a list of strings, a list of token ids or a list of token-id lists (ids are used as given);
- `max_tokens` (completions default 16, the API's), `temperature` (default 1; 0 is greedy), `top_p`, `seed`, `stop`
  (a string or a list), `n` (completions per prompt; with a seed, completion i samples with seed + i);
- `logprobs: k` returns each token's logprob and its k likeliest alternatives; `echo: true` returns the prompt's
  tokens with their logprobs first (the first token has none: nothing precedes it). `echo` + `logprobs` +
  `max_tokens: 0` scores a continuation's loglikelihood without generating;
- the server's serving format (`serve.prompt_template`, `data.template=chat`, `serve.cut_at`, …) applies to text
  prompts that generate, as on `/process`: both endpoints serve the same model;
- chat: `messages` rendered with the model's own chat template; `logprobs: true` + `top_logprobs: k`.
What lec cannot do is refused (400), never ignored: `stream`, penalties, `logit_bias`, `suffix`, `best_of` > `n`,
another model's name (404). Errors have the API's shape, `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from lec.serve.api import ABSURD_NEW_TOKENS, ProcessRequest, unicode_text
from lec.serve.batcher import Batcher
from lec.serve.engine import Engine, RequestError, Row, Step

PREFIX = "/v1"
MAX_TOP_LOGPROBS = 20  # the API allows 5 (completions) and 20 (chat); vLLM allows 20 for both
MAX_N = 128  # the API's own bound on `n`


class OpenAIError(Exception):
    """A request this server refuses, answered in the API's error shape."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.kind = status, param, kind


def error_body(message: str, param: Optional[str] = None, kind: str = "invalid_request_error",
               code: Optional[str] = None) -> Dict[str, Any]:  # fmt: skip
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def _zero(value: Optional[float], name: str) -> Optional[float]:
    if value:
        raise ValueError(f"{name} is not supported: lec's sampler has no penalties (send 0 or leave it out)")
    return value


class Sampling(BaseModel):
    """What completions and chat share."""

    model_config = ConfigDict(extra="forbid")  # an unknown setting is refused, never silently ignored

    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: Optional[Union[str, List[str]]] = None
    seed: Optional[int] = Field(None, ge=0, lt=2**63)
    stream: Literal[False] = False  # lec answers whole responses
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    user: Optional[str] = None  # an end-user id for the caller's own records: no effect on decoding

    _penalties = field_validator("presence_penalty", "frequency_penalty")(lambda v, info: _zero(v, info.field_name))

    @field_validator("stop", mode="after")
    @classmethod
    def _stops(cls, v: Optional[Union[str, List[str]]]) -> Optional[Union[str, List[str]]]:
        for s in [v] if isinstance(v, str) else v or []:
            unicode_text(s)
        return v

    @property
    def stops(self) -> List[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionRequest(Sampling):
    prompt: Union[str, List[str], List[StrictInt], List[List[StrictInt]]]
    max_tokens: Optional[int] = Field(16, ge=0, le=ABSURD_NEW_TOKENS)  # null: the API's default, 16
    logprobs: Optional[int] = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False
    best_of: Optional[int] = Field(None, ge=1, le=MAX_N)
    suffix: Optional[str] = None
    logit_bias: Optional[Dict[str, float]] = None

    @field_validator("prompt", mode="after")
    @classmethod
    def _prompt(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("prompt is an empty list: send a string, strings, or token ids")
        for p in [v] if isinstance(v, str) else v:
            if isinstance(p, str):
                unicode_text(p)
        return v

    @model_validator(mode="after")
    def _refused(self) -> "CompletionRequest":
        if self.suffix:
            raise ValueError("suffix (insertion) is not supported: lec's models complete left to right")
        if self.logit_bias:
            raise ValueError("logit_bias is not supported by lec's sampler")
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError(f"best_of={self.best_of} ≠ n={self.n} is not supported: lec returns every completion "
                             "it samples (send best_of equal to n, or leave it out)")  # fmt: skip
        return self

    def prompts(self) -> List[Union[str, List[int]]]:
        """One entry per prompt: its text or its token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # `name`, tool fields of other clients: they carry no text

    role: Literal["system", "user", "assistant"]
    content: Union[str, List[Dict[str, Any]]]

    @field_validator("content", mode="after")
    @classmethod
    def _text(cls, v: Union[str, List[Dict[str, Any]]]) -> str:
        if isinstance(v, str):
            return unicode_text(v)
        parts = []
        for part in v:  # the API's content parts: only text parts are something a text model reads
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"content part of type {part.get('type')!r}: lec serves text models (type 'text' only)")
            parts.append(unicode_text(part["text"]))
        return "".join(parts)


class ChatCompletionRequest(Sampling):
    messages: List[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=0, le=ABSURD_NEW_TOKENS)  # deprecated name of max_completion_tokens
    max_completion_tokens: Optional[int] = Field(None, ge=0, le=ABSURD_NEW_TOKENS)  # null: until the model stops
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @model_validator(mode="after")
    def _one_limit(self) -> "ChatCompletionRequest":
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("max_tokens and max_completion_tokens are two names of one limit: send one")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    @property
    def limit(self) -> Optional[int]:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def add_routes(app: Any, engine: Engine, batcher: Batcher, name: str, dependencies: Sequence[Any],
               responses: Dict[int, Any]) -> None:  # fmt: skip
    """Mount `/v1/*` on `app`; `dependencies` carry the server's Bearer check, `responses` its documented 401/413."""
    router = APIRouter(prefix=PREFIX, dependencies=list(dependencies))
    documented = {**responses, 400: {"model": ErrorResponse, "description": "a request lec refuses"},
                  404: {"model": ErrorResponse, "description": "another model's name"}}  # fmt: skip

    @router.get("/models", responses=responses)
    def models() -> dict:
        return {"object": "list", "data": [_model_card(name)]}

    @router.get("/models/{model_id}", responses=documented)
    def model(model_id: str) -> dict:
        _check_model(model_id, name)
        return _model_card(name)

    @router.post("/completions", responses=documented)
    async def completions(req: CompletionRequest, request: Request) -> Response:
        _check_model(req.model, name)
        rows, prompts = await run_in_threadpool(_completion_rows, engine, req)
        if not await batcher.wait(rows, request.is_disconnected):
            return Response(status_code=499)  # the client went away; nobody is there to answer
        body = await run_in_threadpool(_completion_body, engine, req, rows, prompts)
        return JSONResponse(body)

    @router.post("/chat/completions", responses=documented)
    async def chat(req: ChatCompletionRequest, request: Request) -> Response:
        _check_model(req.model, name)
        rows = await run_in_threadpool(_chat_rows, engine, req)
        if not await batcher.wait(rows, request.is_disconnected):
            return Response(status_code=499)
        return JSONResponse(await run_in_threadpool(_chat_body, engine, req, rows))

    app.include_router(router)


def is_openai(request: Request) -> bool:
    return request.url.path.startswith(PREFIX + "/")


def validation_error(errors: List[Dict[str, Any]]) -> JSONResponse:
    """pydantic's errors on a `/v1` request, in the API's shape (400, the first error's field as `param`)."""
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    message = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg')}"
                        for e in errors[:5])  # fmt: skip
    return JSONResponse(status_code=400, content=error_body(message, ".".join(loc) or None))


def error_response(err: OpenAIError) -> JSONResponse:
    return JSONResponse(status_code=err.status, content=error_body(str(err), err.param, err.kind))


def _model_card(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "lec"}


def _check_model(model: str, name: str) -> None:
    if model != name:
        raise OpenAIError(404, f"this server serves the model {name!r}, not {model!r}", "model", "not_found_error")


def _sampling(req: Sampling, prompt: str, max_new: int, top: int, echo: bool, seed: Optional[int]) -> ProcessRequest:
    """The engine's request for one completion (validated by the OpenAI schema already)."""
    return ProcessRequest.model_construct(
        prompt=prompt, num_samples=1, num_return_sequences=None, max_new_tokens=max_new, top_k=0, top_p=req.top_p,
        temperature=req.temperature, seed=seed, echo_prompt=echo, top_k_per_token=max(1, top),
        stop_sequences=req.stops,
    )  # fmt: skip


def _rows(engine: Engine, req: Sampling, prompts: List[Tuple[str, Optional[List[int]]]], max_new: Optional[int],
          top: int, echo: bool) -> List[Row]:  # fmt: skip
    """prompt × n rows; completion i of a seeded request samples with seed + i (they differ, and each is
    reproducible)."""
    rows = []
    for text, ids in prompts:
        for i in range(req.n):
            seed = None if req.seed is None else (req.seed + i) % 2**63
            # chat without a limit: until the model stops, the context is full or the server's limit is reached
            limit = engine.max_new_tokens_limit if max_new is None else max_new
            try:
                row = engine.row(_sampling(req, text, limit, top, echo, seed), ids)
            except RequestError as err:
                raise OpenAIError(400, str(err), "prompt" if err.field == "prompt" else err.field) from err
            rows.append(row)
    return rows


def _completion_rows(engine: Engine, req: CompletionRequest) -> Tuple[List[Row], List[Union[str, List[int]]]]:
    prompts = req.prompts()
    pairs = [(p, None) if isinstance(p, str) else (engine.decode(p), p) for p in prompts]
    top = req.logprobs or 0
    return _rows(engine, req, pairs, req.max_tokens if req.max_tokens is not None else 16, top, req.echo), prompts


def _completion_body(engine: Engine, req: CompletionRequest, rows: List[Row],
                     prompts: List[Union[str, List[int]]]) -> dict:  # fmt: skip
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for index, row in enumerate(rows):
        prompt = prompts[index // req.n]
        if index % req.n == 0:
            prompt_tokens += len(row.prompt_ids)
        text, steps = engine.answer(row)
        steps = _with_eos(row, steps)
        completion_tokens += len(steps)
        tokens: List[Tuple[int, Optional[Step]]] = [(s.token_id, s) for s in steps]
        if req.echo:
            text = (prompt if isinstance(prompt, str) else engine.decode(prompt)) + text
            scored = row.prompt_steps[len(row.prompt_steps) - (len(row.prompt_ids) - 1):] if len(row.prompt_ids) > 1 else []
            tokens = [(row.prompt_ids[0], None)] + list(zip(row.prompt_ids[1:], scored)) + tokens
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": engine.finish_reason(row)}
        if req.logprobs is not None:
            choice["logprobs"] = _completion_logprobs(engine, tokens, req.logprobs)
        choices.append(choice)
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": req.model, "choices": choices,
            "usage": _usage(prompt_tokens, completion_tokens)}  # fmt: skip


def _with_eos(row: Row, steps: List[Step]) -> List[Step]:
    """The completion's tokens as the API counts them: the end-of-sequence token that ended it is one of them (its
    text is empty). lm-eval's loglikelihood drops the last token of an echoed `max_tokens: 1` completion: without
    the EOS it would drop the continuation's own last token."""
    return steps + [row.eos] if row.eos is not None and len(steps) == len(row.steps) else steps


def _completion_logprobs(engine: Engine, tokens: List[Tuple[int, Optional[Step]]], k: int) -> dict:
    pieces = [engine.piece(t) for t, _ in tokens]
    offsets, at = [], 0
    for piece in pieces:
        offsets.append(at)
        at += len(piece)
    return {
        "tokens": pieces,
        "token_logprobs": [None if s is None else s.logprob for _, s in tokens],
        "top_logprobs": [None if s is None else dict(list(s.top.items())[: max(k, 1)]) for _, s in tokens],
        "text_offset": offsets,
    }


def _chat_rows(engine: Engine, req: ChatCompletionRequest) -> List[Row]:
    from lec.data.templates import chat_prompt

    messages = [{"role": m.role, "content": m.content} for m in req.messages]
    try:
        text = chat_prompt(engine.tokenizer, messages)
    except ValueError as err:  # the model has no chat template
        raise OpenAIError(400, str(err).replace("data.template=chat", "/v1/chat/completions"), "messages") from err
    ids = engine.tokenize(text, truncation=False, specials=False)  # the template writes its own BOS
    top = (req.top_logprobs or 0) if req.logprobs else 0
    return _rows(engine, req, [(text, ids)], req.limit, top, echo=False)


def _chat_body(engine: Engine, req: ChatCompletionRequest, rows: List[Row]) -> dict:
    choices, completion_tokens = [], 0
    for index, row in enumerate(rows):
        text, steps = engine.answer(row)
        steps = _with_eos(row, steps)
        completion_tokens += len(steps)
        logprobs = None
        if req.logprobs:
            k = req.top_logprobs or 0
            logprobs = {"content": [_chat_token(engine.piece(s.token_id), s.logprob) |
                                    {"top_logprobs": [_chat_token(t, v) for t, v in list(s.top.items())[:k]]}
                                    for s in steps]}  # fmt: skip
        choices.append({"index": index, "message": {"role": "assistant", "content": text},
                        "logprobs": logprobs, "finish_reason": engine.finish_reason(row)})  # fmt: skip
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": req.model, "choices": choices,
            "usage": _usage(len(rows[0].prompt_ids), completion_tokens)}  # fmt: skip


def _chat_token(text: str, logprob: float) -> dict:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
