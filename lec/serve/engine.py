"""Text generation with the numbers HELM reads: per-token logprobs, top-k alternatives, stop sequences, echo.

Rules (../shared/research/helm_challenge.md §1.3–§1.4, where the challenge's sample servers went wrong):
- temperature ≤ 1e-6 is greedy (HELM maps temperature 0 to 1e-7);
- logprobs come from the untempered log-softmax, aligned to the next token (logits at t score token t+1);
- stop sequences are applied here: HELM's HTTP client does not truncate, so "B\\n\\nQuestion…" would score 0;
- generation stops at EOS; `echo_prompt` returns the prompt's tokens with their logprobs, also for 0 new tokens.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
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


class Engine:
    """One causal LM + tokenizer behind a lock; every public method is safe to call from server threads."""

    def __init__(self, model, tokenizer, context: int, max_new_tokens_limit: int = 2048):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.context = context
        self.max_new_tokens_limit = max_new_tokens_limit
        self.device = next(model.parameters()).device
        self._lock = threading.Lock()
        self._special = set(tokenizer.all_special_ids)

    # --- tokenizer endpoints -------------------------------------------------------------------------------------

    def tokenize(self, text: str, truncation: bool = True, max_length: int = 2048) -> List[int]:
        # Truncation keeps the first max_length tokens (HELM's window service truncates from the right).
        return self.tokenizer(text, truncation=truncation, max_length=max_length if truncation else None).input_ids

    def decode(self, tokens: List[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    # --- /process ------------------------------------------------------------------------------------------------

    def process(self, req: ProcessRequest) -> dict:
        start = time.perf_counter()
        prompt_ids = self.tokenize(req.prompt, truncation=False)
        if len(prompt_ids) >= self.context:
            raise RequestError(
                f"prompt is {len(prompt_ids)} tokens; the model's context is {self.context} tokens "
                "(truncate it, e.g. with /tokenize truncation=true max_length=…)"
            )
        if req.max_new_tokens > self.max_new_tokens_limit:
            raise RequestError(f"max_new_tokens={req.max_new_tokens} exceeds this server's limit {self.max_new_tokens_limit}")
        max_new = min(req.max_new_tokens, self.context - len(prompt_ids))
        with self._lock:
            prompt_steps, steps = self._run(prompt_ids, req, max_new)
        text, steps = self._cut(steps, req.stop_sequences)
        tokens = [self._token(s) for s in steps]
        if req.echo_prompt:
            text = req.prompt + text
            tokens = [self._token(s) for s in prompt_steps] + tokens
        return {
            "text": text,
            "tokens": tokens,
            "logprob": float(sum(t["logprob"] for t in tokens)),
            "request_time": time.perf_counter() - start,
        }

    @torch.inference_mode()
    def _run(self, prompt_ids: List[int], req: ProcessRequest, max_new: int) -> Tuple[List[Step], List[Step]]:
        """Prompt steps (only when echoed) and generated steps, each with untempered logprobs."""
        k = req.top_k_per_token
        generator = None
        if req.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(req.seed)
        ids = torch.tensor([prompt_ids], device=self.device)
        out = self.model(input_ids=ids, use_cache=max_new > 0)
        logits = out.logits[0].float()
        prompt_steps: List[Step] = []
        if req.echo_prompt:
            logp = torch.log_softmax(logits[:-1], dim=-1)  # row t scores prompt token t+1
            for t, tok in enumerate(prompt_ids[1:], start=1):
                prompt_steps.append(Step(tok, float(logp[t - 1, tok]), self._top(logp[t - 1], k)))
            if prompt_ids and prompt_ids[0] not in self._special:  # no BOS: the first token has no context
                prompt_steps.insert(0, Step(prompt_ids[0], 0.0, {}))
        steps: List[Step] = []
        stops = req.stop_sequences
        past, next_logits = out.past_key_values, logits[-1]
        generated: List[int] = []
        for _ in range(max_new):
            logp = torch.log_softmax(next_logits, dim=-1)
            tok = self._choose(next_logits, logp, req, generator)
            if tok == self.tokenizer.eos_token_id:
                break
            steps.append(Step(tok, float(logp[tok]), self._top(logp, k)))
            generated.append(tok)
            if stops and any(s in self.decode(generated) for s in stops):
                break
            out = self.model(input_ids=torch.tensor([[tok]], device=self.device), past_key_values=past, use_cache=True)
            past, next_logits = out.past_key_values, out.logits[0, -1].float()
        return prompt_steps, steps

    def _choose(self, logits: torch.Tensor, logp: torch.Tensor, req: ProcessRequest, generator) -> int:
        if req.temperature <= GREEDY_TEMPERATURE:
            return int(torch.argmax(logp))
        scores = logits / req.temperature
        if 0 < req.top_k < scores.numel():
            kth = torch.topk(scores, req.top_k).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if req.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True)
            cum = torch.cumsum(torch.softmax(sorted_scores, dim=-1), dim=-1)
            drop = cum - torch.softmax(sorted_scores, dim=-1) > req.top_p  # keep the smallest set reaching top_p
            scores = scores.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
        return int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator))

    def _top(self, logp: torch.Tensor, k: int) -> Dict[str, float]:
        values, indices = torch.topk(logp, k)
        top: Dict[str, float] = {}
        for v, i in zip(values.tolist(), indices.tolist()):
            top.setdefault(self.decode([i]), v)  # two ids can decode alike (byte pieces): keep the likelier
        return top

    def _cut(self, steps: List[Step], stops: List[str]) -> Tuple[str, List[Step]]:
        """Completion text up to the first stop sequence, and the steps whose text starts before it."""
        pieces, text = [], ""
        for i in range(len(steps)):
            piece = self.decode([s.token_id for s in steps[: i + 1]])[len(text):]
            pieces.append(piece)
            text += piece
        cut = min((text.find(s) for s in stops if s and s in text), default=len(text))
        kept, length = [], 0
        for step, piece in zip(steps, pieces):
            if length >= cut:
                break
            kept.append(Step(step.token_id, step.logprob, step.top))
            length += len(piece)
        return text[:cut], kept

    def _token(self, step: Step) -> dict:
        return {"text": self.decode([step.token_id]), "logprob": step.logprob, "top_logprob": step.top}
