"""Text generation with the numbers HELM reads: per-token logprobs, top-k alternatives, stop sequences, echo —
for a batch of requests at once (the dynamic batcher groups concurrent HELM requests; a single request is a batch
of one, so there is one code path).

Rules (../shared/research/helm_challenge.md §1.3–§1.4, where the challenge's sample servers went wrong):
- temperature ≤ 1e-6 is greedy (HELM maps temperature 0 to 1e-7);
- logprobs come from the untempered log-softmax, aligned to the next token (logits at t score token t+1);
- stop sequences are applied here: HELM's HTTP client does not truncate, so "B\\n\\nQuestion…" would score 0;
- generation stops at EOS; `echo_prompt` returns the prompt's tokens with their logprobs, also for 0 new tokens.
Batching: prompts are left-padded with an attention mask and matching position ids, so each row computes what it
would alone; a finished row stops contributing tokens while the others go on.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from lec.serve.api import ProcessRequest

GREEDY_TEMPERATURE = 1e-6


class RequestError(ValueError):
    """A well-formed request the model cannot serve (e.g. a prompt longer than its context) → HTTP 422."""


@dataclass
class Step:
    token_id: int
    logprob: float
    top: Dict[str, float]


@dataclass
class _Row:
    req: ProcessRequest
    prompt_ids: List[int]
    max_new: int
    start: float
    generator: Optional[torch.Generator] = None
    prompt_steps: List[Step] = field(default_factory=list)
    steps: List[Step] = field(default_factory=list)
    done: bool = False


@dataclass
class PromptFormat:
    """A model's serving-side prompt wrapper and answer clean-up (e.g. the 4090 winner's): identity by default."""

    template: Optional[str] = None  # "{prompt}" is replaced by HELM's prompt
    if_blank_lines_below: Optional[int] = None  # wrap only prompts with fewer "\n\n" separators than this
    cut_at: Optional[str] = None
    strip_prefixes: Tuple[str, ...] = ()

    def wrap(self, prompt: str) -> str:
        if self.template is None:
            return prompt
        if self.if_blank_lines_below is not None and prompt.count("\n\n") >= self.if_blank_lines_below:
            return prompt
        return self.template.replace("{prompt}", prompt)

    def clean(self, text: str) -> str:
        if self.cut_at and self.cut_at in text:
            text = text[: text.index(self.cut_at)]
        for prefix in self.strip_prefixes:
            head = text.lstrip()
            if head.lower().startswith(prefix.lower()):
                text = head[len(prefix):]
        return text


class Engine:
    """One causal LM + tokenizer behind a lock; every public method is safe to call from server threads."""

    def __init__(self, model, tokenizer, context: int, max_new_tokens_limit: int = 2048,
                 prompt_format: Optional[PromptFormat] = None):  # fmt: skip
        self.format = prompt_format or PromptFormat()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.context = context
        self.max_new_tokens_limit = max_new_tokens_limit
        self.device = next(model.parameters()).device
        self._lock = threading.Lock()
        # HF fast tokenizers keep truncation settings as shared state: calls with and without truncation from
        # different threads would change each other's results, so every encode goes through this lock.
        self._tok_lock = threading.Lock()
        self._special = set(tokenizer.all_special_ids)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        # Text of every single token, decoded once: the per-step top-k alternatives read it instead of decoding.
        self._piece = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True)

    # --- tokenizer endpoints -------------------------------------------------------------------------------------

    def tokenize(self, text: str, truncation: bool = True, max_length: int = 2048) -> List[int]:
        # Truncation keeps the first max_length tokens (HELM's window service truncates from the right).
        with self._tok_lock:
            ids = self.tokenizer(text).input_ids
        return ids[:max_length] if truncation else ids

    def decode(self, tokens: List[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    # --- /process ------------------------------------------------------------------------------------------------

    def check(self, req: ProcessRequest) -> Tuple[List[int], int]:
        """Validate against the model: (prompt ids, new tokens allowed) or RequestError."""
        # The wrapper applies to generation only: an echoed prompt is scored as HELM sent it.
        prompt = req.prompt if req.echo_prompt else self.format.wrap(req.prompt)
        prompt_ids = self.tokenize(prompt, truncation=False)
        if not prompt_ids:
            raise RequestError("the prompt encodes to no tokens; send a non-empty prompt")
        if len(prompt_ids) + (1 if req.max_new_tokens > 0 else 0) > self.context:
            raise RequestError(
                f"prompt is {len(prompt_ids)} tokens; the model's context is {self.context} tokens "
                "(truncate it, e.g. with /tokenize truncation=true max_length=…)"
            )
        if req.max_new_tokens > self.max_new_tokens_limit:
            raise RequestError(f"max_new_tokens={req.max_new_tokens} exceeds this server's limit {self.max_new_tokens_limit}")
        return prompt_ids, min(req.max_new_tokens, self.context - len(prompt_ids))

    def process(self, req: ProcessRequest) -> dict:
        return self.process_batch([req])[0]

    def process_batch(self, reqs: List[ProcessRequest]) -> List[dict]:
        """Responses for a batch of requests (RequestError if one cannot be served)."""
        return self.run_checked([(req, *self.check(req)) for req in reqs])

    def run_checked(self, items: List[Tuple[ProcessRequest, List[int], int]]) -> List[dict]:
        """Responses for (request, prompt ids, new tokens allowed) triples that `check` produced."""
        rows = []
        for req, prompt_ids, max_new in items:
            gen = None
            if req.seed is not None:
                gen = torch.Generator(device=self.device).manual_seed(req.seed)
            rows.append(_Row(req, prompt_ids, max_new, time.perf_counter(), gen))
        with self._lock:
            self._run(rows)
        return [self._response(r) for r in rows]

    @torch.inference_mode()
    def _run(self, rows: List[_Row]) -> None:
        n, longest = len(rows), max(len(r.prompt_ids) for r in rows)
        ids = torch.full((n, longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, longest), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding: every row's last prompt token is in the last column
            ids[i, longest - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[i, longest - len(r.prompt_ids):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        need_cache = any(r.max_new > 0 for r in rows)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=need_cache)
        logits = out.logits.float()
        for i, r in enumerate(rows):
            if r.req.echo_prompt:
                self._echo(r, logits[i, longest - len(r.prompt_ids):])
            r.done = r.max_new == 0
        past, next_logits = out.past_key_values, logits[:, -1]
        last_pos = positions[:, -1]
        while not all(r.done for r in rows):
            logp = torch.log_softmax(next_logits, dim=-1)
            greedy = logp.argmax(-1)
            k = max(r.req.top_k_per_token for r in rows if not r.done)
            top_v, top_i = (x.tolist() for x in torch.topk(logp, k, dim=-1))
            chosen = torch.full((n,), self.pad_id, dtype=torch.long, device=self.device)
            for i, r in enumerate(rows):
                if r.done:
                    continue
                sampled = r.req.temperature > GREEDY_TEMPERATURE
                tok = self._sample(next_logits[i], r) if sampled else int(greedy[i])
                if tok == self.tokenizer.eos_token_id:
                    r.done = True
                    continue
                kk = r.req.top_k_per_token
                r.steps.append(Step(tok, float(logp[i, tok]), self._top(top_v[i][:kk], top_i[i][:kk])))
                chosen[i] = tok
                if len(r.steps) >= r.max_new or self._hit_stop(r):
                    r.done = True
            if all(r.done for r in rows):
                break
            mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=self.device)], dim=1)
            last_pos = last_pos + 1
            out = self.model(input_ids=chosen[:, None], attention_mask=mask, position_ids=last_pos[:, None],
                             past_key_values=past, use_cache=True)  # fmt: skip
            past, next_logits = out.past_key_values, out.logits[:, -1].float()

    def _hit_stop(self, r: _Row) -> bool:
        """Does the completion now contain a stop sequence? Only the tail can hold a new one: decode just that."""
        stops = r.req.stop_sequences
        if not stops:
            return False
        tail = max(len(s) for s in stops) + 4  # tokens: each is ≥ 1 character, +4 for split UTF-8 bytes
        text = self._text(r.steps[-tail:])
        return any(s and s in text for s in stops)

    def _echo(self, r: _Row, logits: torch.Tensor) -> None:
        """Prompt tokens with logprobs: row t of the prompt's logits scores prompt token t+1."""
        logp = torch.log_softmax(logits[:-1], dim=-1)
        top_v, top_i = (x.tolist() for x in torch.topk(logp, r.req.top_k_per_token, dim=-1))
        for t, tok in enumerate(r.prompt_ids[1:], start=1):
            r.prompt_steps.append(Step(tok, float(logp[t - 1, tok]), self._top(top_v[t - 1], top_i[t - 1])))
        if r.prompt_ids and r.prompt_ids[0] not in self._special:  # no BOS: the first token has no context
            r.prompt_steps.insert(0, Step(r.prompt_ids[0], 0.0, {}))

    def _sample(self, logits: torch.Tensor, r: _Row) -> int:
        """Temperature, then top-k, then top-p (nucleus) truncation; seeded per request when it gives a seed."""
        req = r.req
        scores = logits / req.temperature
        if 0 < req.top_k < scores.numel():
            kth = torch.topk(scores, req.top_k).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if req.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True)
            probs = torch.softmax(sorted_scores, dim=-1)
            drop = torch.cumsum(probs, dim=-1) - probs > req.top_p  # keep the smallest set reaching top_p
            scores = scores.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
        return int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=r.generator))

    def _top(self, values: List[float], indices: List[int]) -> Dict[str, float]:
        top: Dict[str, float] = {}
        for v, i in zip(values, indices):
            top.setdefault(self._piece[i], v)  # two ids can decode alike (byte pieces): keep the likelier
        return top

    def _text(self, steps: List[Step]) -> str:
        return self.decode([s.token_id for s in steps])

    def _cut(self, steps: List[Step], stops: List[str]) -> Tuple[str, List[Step]]:
        """Completion text up to the first stop sequence, and the steps whose text starts before it."""
        full = self._text(steps)
        if not any(s and s in full for s in stops):
            return full, steps
        pieces, text = [], ""
        for i in range(len(steps)):
            piece = self._text(steps[: i + 1])[len(text):]
            pieces.append(piece)
            text += piece
        cut = min((text.find(s) for s in stops if s and s in text), default=len(text))
        kept, length = [], 0
        for step, piece in zip(steps, pieces):
            if length >= cut:
                break
            kept.append(step)
            length += len(piece)
        return text[:cut], kept

    def _response(self, r: _Row) -> dict:
        text, steps = self._cut(r.steps, r.req.stop_sequences)
        text = self.format.clean(text)  # the answer text; tokens stay what the model generated
        tokens = [self._token(s) for s in steps]
        if r.req.echo_prompt:
            text = r.req.prompt + text
            tokens = [self._token(s) for s in r.prompt_steps] + tokens
        return {
            "text": text,
            "tokens": tokens,
            "logprob": float(sum(t["logprob"] for t in tokens)),
            "request_time": time.perf_counter() - r.start,
        }

    def _token(self, step: Step) -> dict:
        return {"text": self._piece[step.token_id], "logprob": step.logprob, "top_logprob": step.top}
