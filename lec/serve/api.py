"""Request/response schemas of the challenge's HTTP API, as a superset of what HELM sends.

The challenge's sample servers declared `num_samples`, `top_k`, `temperature`, `seed`, `echo_prompt`; HELM's
HTTPModelClient sends `num_return_sequences`, `top_p`, `top_k_per_token` and `stop_sequences` too, which the samples
silently dropped (neurips_llm_efficiency_challenge @ b4abc4a sample-submissions/lit-gpt/api.py; stanford-crfm/helm
v0.5.16 src/helm/clients/http_model_client.py). lec accepts both and applies every one of them.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A request asking for more new tokens than this is refused (422) instead of tying the server up for hours.
ABSURD_NEW_TOKENS = 1 << 16


def unicode_text(value: str) -> str:
    """JSON can carry a lone UTF-16 surrogate ("\\ud800") that is no character at all: no tokenizer can encode it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"not valid Unicode: a lone surrogate at character {err.start}") from None
    return value


def one_completion(value: Optional[int]) -> Optional[int]:
    if value is not None and value > 1:
        raise ValueError(f"{value} completions asked: the challenge API answers one completion per request "
                         "(one `text`); send the request that many times, each with its own seed")  # fmt: skip
    return value


class ProcessRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str
    num_samples: int = Field(1, ge=1, le=1)  # the response holds one completion: more is refused, never ignored
    num_return_sequences: Optional[int] = Field(None, ge=1, le=1)  # HELM's name for num_samples
    max_new_tokens: int = Field(50, ge=0, le=ABSURD_NEW_TOKENS)
    top_k: int = Field(200, ge=0)  # 0 = no top-k truncation
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    temperature: float = Field(0.8, ge=0.0)  # ≤ 1e-6 is greedy (HELM sends 1e-7 for temperature 0)
    seed: Optional[int] = Field(None, ge=0, lt=2**63)
    echo_prompt: Optional[bool] = None
    top_k_per_token: int = Field(1, ge=1, le=100)
    stop_sequences: List[str] = Field(default_factory=list)

    _text = field_validator("prompt", mode="after")(unicode_text)
    _stops = field_validator("stop_sequences", mode="after")(lambda v: [unicode_text(s) for s in v])
    _one = field_validator("num_samples", "num_return_sequences", mode="before")(
        lambda v: one_completion(v) if isinstance(v, int) and not isinstance(v, bool) else v)


class Token(BaseModel):
    text: str
    logprob: float
    top_logprob: Dict[str, float]


class ProcessResponse(BaseModel):
    text: str
    tokens: List[Token]
    logprob: float
    request_time: float


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str
    truncation: bool = True
    max_length: int = Field(2048, ge=1)

    _text = field_validator("text", mode="after")(unicode_text)


class TokenizeResponse(BaseModel):
    tokens: List[int]
    request_time: float


class DecodeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tokens: List[int]


class DecodeResponse(BaseModel):
    text: str
    request_time: float
