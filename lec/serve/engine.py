"""Text generation with the numbers HELM reads: per-token logprobs, top-k alternatives, stop sequences, echo —
for a continuously batched set of requests (a single request is a batch of one, so there is one code path).

Rules (where the challenge's sample servers went wrong: llm-efficiency-challenge/neurips_llm_efficiency_challenge
@ b4abc4a sample-submissions/; what HELM sends: stanford-crfm/helm v0.5.16 src/helm/clients/http_model_client.py,
benchmark/adaptation/adapters/multiple_choice_joint_adapter.py):
- temperature ≤ 1e-6 is greedy (HELM maps temperature 0 to 1e-7);
- logprobs come from the untempered log-softmax, aligned to the next token (logits at t score token t+1);
- stop sequences are applied here: HELM's HTTP client does not truncate, so "B\\n\\nQuestion…" would score 0;
- generation stops at EOS; `echo_prompt` returns the prompt's tokens with their logprobs, also for 0 new tokens.
Continuous batching: `Engine.step` advances every running request by one token. Requests join between steps (their
prompts prefilled in one left-padded pass, then their KV cache left-padded onto the running one) and leave as soon
as they finish, so a 1-token MMLU request never waits for a 64-token GSM answer and a slot never idles. Every row
has its own attention mask and position ids, so it computes what it would alone (tested against one-at-a-time).
"""

from __future__ import annotations

import inspect
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from lec.data.templates import chat_prompt
from lec.serve import prefix
from lec.serve.api import ProcessRequest

GREEDY_TEMPERATURE = 1e-6


class RequestError(ValueError):
    """A well-formed request the model cannot serve (e.g. a prompt longer than its context) → HTTP 422 naming
    `field`, the request field at fault."""

    def __init__(self, message: str, field: str = "prompt"):
        super().__init__(message)
        self.field = field


@dataclass
class Step:
    token_id: int
    logprob: float
    top: Dict[str, float]


@dataclass
class Row:
    """One request in flight: its prompt, limits, and the steps decoded so far."""

    req: ProcessRequest
    prompt_ids: List[int]
    max_new: int
    start: float
    generator: Optional[torch.Generator] = None
    prompt_steps: List[Step] = field(default_factory=list)
    steps: List[Step] = field(default_factory=list)
    done: bool = False
    cancelled: bool = False  # its client went away: it stops at the next step
    eos: Optional[Step] = None  # the end-of-sequence token that ended it (not part of the answer; OpenAI lists it)


@dataclass
class Batch:
    """Rows decoded together: one KV cache (rows left-padded to a common width), the attention mask over it, each
    row's position of its last token, the logits for every row's next token, and the tokens picked from them."""

    rows: List[Row]
    cache: Optional[DynamicCache]
    mask: torch.Tensor
    last_pos: torch.Tensor
    logits: torch.Tensor
    next_ids: Optional[torch.Tensor] = None


@dataclass
class PromptFormat:
    """A model's serving-side prompt wrapper and answer clean-up (e.g. the 4090 winner's): identity by default."""

    template: Optional[str] = None  # "{prompt}" is replaced by HELM's prompt
    if_blank_lines_below: Optional[int] = None  # wrap only prompts with fewer "\n\n" separators than this
    cut_at: Optional[str] = None
    strip_prefixes: Tuple[str, ...] = ()
    chat_tokenizer: Any = None  # data.template=chat: HELM's prompt is the user turn of the model's chat template

    @property
    def adds_special_tokens(self) -> bool:
        return self.chat_tokenizer is None  # a chat template writes its own BOS

    def wrap(self, prompt: str) -> str:
        if self.chat_tokenizer is not None:  # the very function training rendered its prompts with
            return chat_prompt(self.chat_tokenizer, [{"role": "user", "content": prompt}])
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
    """One causal LM + tokenizer. `tokenize`, `decode`, `row`, `respond` and `process*` are safe to call from server
    threads; `step` runs under `lock` (the batcher's worker takes it for each step)."""

    def __init__(self, model, tokenizer, context: int, max_new_tokens_limit: int = 2048,
                 prompt_format: Optional[PromptFormat] = None, prefix_cache_bytes: int = 0):  # fmt: skip
        self.format = prompt_format or PromptFormat()
        self.prefix = prefix.PrefixCache(prefix_cache_bytes) if prefix_cache_bytes > 0 else None
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.context = context
        self.max_new_tokens_limit = max_new_tokens_limit
        self.device = next(model.parameters()).device
        # Prefill asks for the last position's logits only (a vocab-sized row per prompt token otherwise), where the
        # model's forward supports it (every transformers CausalLM does; remote code may not).
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.lock = threading.Lock()  # one decoding step at a time
        self._special = set(tokenizer.all_special_ids)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token: set model.pad_token in the model config")
        # Text of every single token, decoded once: the per-step top-k alternatives read it instead of decoding.
        # The output layer can be wider than the tokenizer (Qwen pads it to a multiple of 128): those ids read "".
        pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True)
        # No token covers more bytes than the longest piece (+4 for byte-fallback and normaliser slack), so a
        # prompt longer than context × that cannot fit: refused without spending seconds tokenizing megabytes.
        self._max_prompt_bytes = (context + 8) * (max(len(p.encode("utf-8")) for p in pieces) + 4)
        width = model.get_output_embeddings().weight.shape[0]
        self._piece = pieces + [""] * max(0, width - len(pieces))
        # Tokens the prompt wrapper adds, +2 because BPE merges across its two joins can each shift the count by
        # one. HELM is told a context this much shorter (prod_env), so a prompt it fitted still fits once wrapped.
        wrapped = self.tokenize(self.format.wrap(""), truncation=False, specials=self.format.adds_special_tokens)
        extra = len(wrapped) - len(self.tokenize("", truncation=False))
        self.wrapper_tokens = extra + 2 if extra > 0 else 0

    # --- tokenizer endpoints -------------------------------------------------------------------------------------

    def tokenize(self, text: str, truncation: bool = True, max_length: int = 2048, specials: bool = True) -> List[int]:
        # Truncation keeps the first max_length tokens (HELM's window service truncates from the right). It is done
        # here, never by the tokenizer: an HF fast tokenizer keeps truncation settings as state shared by threads,
        # and as no call changes them, threads tokenize at once without a lock (the Rust side releases the GIL).
        ids = self.tokenizer(text, add_special_tokens=specials).input_ids
        return ids[:max_length] if truncation else ids

    def decode(self, tokens: List[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    # --- /process ------------------------------------------------------------------------------------------------

    def check(self, req: ProcessRequest, prompt_ids: Optional[List[int]] = None) -> Tuple[List[int], int]:
        """Validate against the model: (prompt ids, new tokens allowed) or RequestError. `prompt_ids`: a prompt
        given as token ids (OpenAI's `prompt: [[…]]`), used as it is."""
        size = len(req.prompt.encode("utf-8"))
        if size > self._max_prompt_bytes:
            raise RequestError(f"prompt is {size} bytes: more than the model's context of "
                               f"{self.context} tokens can hold; truncate it (/tokenize truncation=true max_length=…)")
        # The wrapper applies to generation only: an echoed prompt is scored as HELM sent it.
        if prompt_ids is not None:
            vocab = len(self._piece)
            if any(not 0 <= t < vocab for t in prompt_ids):
                raise RequestError(f"a prompt token id is outside the vocabulary [0, {vocab})")
        elif req.echo_prompt:
            prompt_ids = self.tokenize(req.prompt, truncation=False)
        else:
            fmt = self.format
            prompt_ids = self.tokenize(fmt.wrap(req.prompt), truncation=False, specials=fmt.adds_special_tokens)
        if not prompt_ids:
            raise RequestError("the prompt encodes to no tokens; send a non-empty prompt")
        if len(prompt_ids) + (1 if req.max_new_tokens > 0 else 0) > self.context:
            raise RequestError(
                f"prompt is {len(prompt_ids)} tokens; the model's context is {self.context} tokens "
                "(truncate it, e.g. with /tokenize truncation=true max_length=…)"
            )
        if req.max_new_tokens > self.max_new_tokens_limit:
            raise RequestError(f"max_new_tokens={req.max_new_tokens} exceeds this server's limit "
                               f"{self.max_new_tokens_limit}", "max_new_tokens")  # fmt: skip
        return prompt_ids, min(req.max_new_tokens, self.context - len(prompt_ids))

    def row(self, req: ProcessRequest, prompt_ids: Optional[List[int]] = None) -> Row:
        """A validated request, ready to join a batch (RequestError if the model cannot serve it)."""
        prompt_ids, max_new = self.check(req, prompt_ids)
        gen = torch.Generator(device=self.device).manual_seed(req.seed) if req.seed is not None else None
        return Row(req, prompt_ids, max_new, time.perf_counter(), gen)

    def process(self, req: ProcessRequest) -> dict:
        return self.process_batch([req])[0]

    def process_batch(self, reqs: List[ProcessRequest]) -> List[dict]:
        """Responses for requests that arrive together: decoded as one batch until the last one finishes."""
        rows = [self.row(req) for req in reqs]
        with self.lock:
            batch = self.step(None, rows)
            while batch is not None:
                batch = self.step(batch)
        return [self.respond(r) for r in rows]

    # --- continuous batching -------------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self, batch: Optional[Batch], joining: Sequence[Row] = ()) -> Optional[Batch]:
        """One scheduling step: prefill the joining rows into the batch, pick every row's next token, drop the rows
        that finished (their `done` is set) and run the model once on the rest. Returns the batch still running,
        or None. Callers hold `lock` for a step, not between steps, so a server admits new requests at every token."""
        if joining:
            batch = self._merge(batch, self._running(self._prefill(list(joining))))  # echo-only rows end at prefill
        if batch is None:
            return None
        self._pick(batch)
        batch = self._running(batch)
        if batch is not None:
            self._advance(batch)
        return batch

    def _prefill(self, rows: List[Row]) -> Batch:
        """The prompts of new rows in one forward pass (each row computes what it would alone). A row whose prompt
        starts with cached blocks (lec/serve/prefix.py) feeds only the rest: the cache's columns hold each row's
        cached prefix right-aligned, the input columns its remaining tokens right-aligned, the mask both, and the
        positions continue from the prefix. Echo rows score every prompt token, so they prefill whole."""
        n = len(rows)
        echo = any(r.req.echo_prompt for r in rows)
        generating = any(r.max_new > 0 for r in rows)
        use_prefix = self.prefix is not None and generating and not echo
        found = [self.prefix.lookup(r.prompt_ids) if use_prefix else (0, None) for r in rows]
        cached = [length for length, _ in found]
        rest = [r.prompt_ids[length:] for r, length in zip(rows, cached)]
        width_p, width_s = max(cached), max(len(x) for x in rest)
        ids = torch.full((n, width_s), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width_p + width_s), dtype=torch.long)
        positions = torch.zeros((n, width_s), dtype=torch.long)
        for i, (length, tail) in enumerate(zip(cached, rest)):
            ids[i, width_s - len(tail):] = torch.tensor(tail)
            mask[i, width_p - length:width_p] = 1
            mask[i, width_p + width_s - len(tail):] = 1
            positions[i, width_s - len(tail):] = torch.arange(length, length + len(tail))
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        cache = self._prefix_cache(found, width_p) if width_p else (DynamicCache() if generating else None)
        keep = {"logits_to_keep": 0 if echo else 1} if self._keeps_logits else {}  # echo scores every prompt token
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=cache is not None, **keep)  # fmt: skip
        logits = out.logits.float()
        for i, r in enumerate(rows):
            if r.req.echo_prompt:
                self._echo(r, logits[i, width_s - len(r.prompt_ids):])
            r.done = r.max_new == 0
        if self.prefix is not None and cache is not None:
            self._keep_prefixes(rows, cached, rest, width_p, width_s, cache)
        return Batch(rows, cache, mask, positions[:, -1], logits[:, -1])

    def _prefix_cache(self, found, width: int) -> DynamicCache:
        """A cache holding each row's cached prefix KV right-aligned in `width` columns (zeros, masked, before)."""
        sample = next(kv for _, kv in found if kv is not None)
        layers = []
        for layer, (k0, v0) in enumerate(sample):
            keys = k0.new_zeros((len(found), k0.shape[0], width, k0.shape[2]))
            values = v0.new_zeros((len(found), v0.shape[0], width, v0.shape[2]))
            for i, (length, kv) in enumerate(found):
                if kv is not None:
                    keys[i, :, width - length:], values[i, :, width - length:] = kv[layer]
            layers.append((keys, values))
        return DynamicCache(ddp_cache_data=layers)

    def _keep_prefixes(self, rows: List[Row], cached: List[int], rest: List[List[int]], width_p: int, width_s: int,
                       cache: DynamicCache) -> None:  # fmt: skip
        """Copy every full prompt block the prefix cache lacks out of this prefill's KV."""
        for i, r in enumerate(rows):
            self.prefix.prompt_tokens += len(r.prompt_ids)
            self.prefix.cached_tokens += cached[i]

            def block(b: int, i: int = i) -> list:
                t = b * prefix.BLOCK  # the block's first token; blocks never straddle the cached length
                col = width_p - cached[i] + t if t < cached[i] else width_p + width_s - len(rest[i]) + t - cached[i]
                return [(layer.keys[i, :, col:col + prefix.BLOCK].clone(),
                         layer.values[i, :, col:col + prefix.BLOCK].clone()) for layer in cache.layers]  # fmt: skip

            self.prefix.store(r.prompt_ids, block)

    def _merge(self, a: Optional[Batch], b: Optional[Batch]) -> Optional[Batch]:
        """One batch from two: the shorter cache is left-padded (masked) to the longer; positions stay per row."""
        if a is None or b is None:
            return a or b
        width = max(a.mask.shape[1], b.mask.shape[1])
        pad = lambda t, dim: F.pad(t, (0, 0) * (t.dim() - dim - 1) + (width - t.shape[dim], 0))  # noqa: E731
        for la, lb in zip(a.cache.layers, b.cache.layers):
            la.keys = torch.cat([pad(la.keys, 2), pad(lb.keys, 2)])
            la.values = torch.cat([pad(la.values, 2), pad(lb.values, 2)])
        return Batch(a.rows + b.rows, a.cache, torch.cat([pad(a.mask, 1), pad(b.mask, 1)]),
                     torch.cat([a.last_pos, b.last_pos]), torch.cat([a.logits, b.logits]))  # fmt: skip

    def _running(self, batch: Batch) -> Optional[Batch]:
        """The batch without its finished rows (None if all finished); columns that are padding for every remaining
        row are dropped."""
        keep = [i for i, r in enumerate(batch.rows) if not r.done]
        if len(keep) == len(batch.rows) or not keep:
            return batch if keep else None
        idx = torch.tensor(keep, device=self.device)
        mask = batch.mask[idx]
        first = int(mask.any(0).int().argmax())
        for layer in batch.cache.layers:
            layer.keys, layer.values = layer.keys[idx, :, first:], layer.values[idx, :, first:]
        next_ids = None if batch.next_ids is None else batch.next_ids[idx]
        return Batch([batch.rows[i] for i in keep], batch.cache, mask[:, first:], batch.last_pos[idx],
                     batch.logits[idx], next_ids)  # fmt: skip

    def _pick(self, batch: Batch) -> None:
        """Each running row's next token (greedy or sampled), its untempered logprob and top-k alternatives."""
        logp = torch.log_softmax(batch.logits, dim=-1)
        greedy = logp.argmax(-1).tolist()
        k = max((r.req.top_k_per_token for r in batch.rows if not r.done), default=1)
        top_v, top_i = (x.tolist() for x in torch.topk(logp, k, dim=-1))
        chosen = [self.pad_id] * len(batch.rows)
        for i, r in enumerate(batch.rows):
            if r.cancelled:
                r.done = True
            if r.done:
                continue
            sampled = r.req.temperature > GREEDY_TEMPERATURE
            tok = self._sample(batch.logits[i], r) if sampled else greedy[i]
            kk = r.req.top_k_per_token
            step = Step(tok, float(logp[i, tok]), self._top(top_v[i][:kk], top_i[i][:kk]))
            if tok == self.tokenizer.eos_token_id:
                r.done, r.eos = True, step
                continue
            r.steps.append(step)
            chosen[i] = tok
            if len(r.steps) >= r.max_new or self._hit_stop(r):
                r.done = True
        batch.next_ids = torch.tensor(chosen, device=self.device)

    def _advance(self, batch: Batch) -> None:
        """Feed every row its picked token: one forward pass over the cache, the next logits."""
        n = len(batch.rows)
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((n, 1))], dim=1)
        batch.last_pos = batch.last_pos + 1
        out = self.model(input_ids=batch.next_ids[:, None], attention_mask=batch.mask,
                         position_ids=batch.last_pos[:, None], past_key_values=batch.cache, use_cache=True)  # fmt: skip
        batch.logits = out.logits[:, -1].float()

    def _hit_stop(self, r: Row) -> bool:
        """Does the completion now contain a stop sequence? Only the tail can hold a new one: decode just that."""
        stops = r.req.stop_sequences
        if not stops:
            return False
        tail = max(len(s) for s in stops) + 4  # tokens: each is ≥ 1 character, +4 for split UTF-8 bytes
        text = self._text(r.steps[-tail:])
        return any(s and s in text for s in stops)

    def _echo(self, r: Row, logits: torch.Tensor) -> None:
        """Prompt tokens with logprobs: row t of the prompt's logits scores prompt token t+1."""
        logp = torch.log_softmax(logits[:-1], dim=-1)
        top_v, top_i = (x.tolist() for x in torch.topk(logp, r.req.top_k_per_token, dim=-1))
        for t, tok in enumerate(r.prompt_ids[1:], start=1):
            r.prompt_steps.append(Step(tok, float(logp[t - 1, tok]), self._top(top_v[t - 1], top_i[t - 1])))
        if r.prompt_ids and r.prompt_ids[0] not in self._special:  # no BOS: the first token has no context
            r.prompt_steps.insert(0, Step(r.prompt_ids[0], 0.0, {}))

    def _sample(self, logits: torch.Tensor, r: Row) -> int:
        """Temperature, then top-k, then top-p (nucleus) truncation; seeded per request when it gives a seed."""
        req = r.req
        scores = logits / req.temperature
        if 0 < req.top_k < scores.numel():
            kth = torch.topk(scores, req.top_k).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if req.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True)
            probs = torch.softmax(sorted_scores, dim=-1)
            drop = torch.cumsum(probs, dim=-1) - probs >= req.top_p  # keep the smallest set reaching top_p
            drop[0] = False  # … which always holds the likeliest token (a top_p below float32's range is 0 here)
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

    def answer(self, r: Row) -> Tuple[str, List[Step]]:
        """A finished row's completion: its text (cut at a stop sequence, cleaned by the serving format) and the
        steps whose text starts before the cut (tokens stay what the model generated)."""
        text, steps = self._cut(r.steps, r.req.stop_sequences)
        return self.format.clean(text), steps

    def finish_reason(self, r: Row) -> str:
        """OpenAI's words: "length" when the row ran out of new tokens, else "stop" (EOS or a stop sequence)."""
        stopped = len(r.steps) < r.max_new or self._hit_stop(r) if r.steps else r.max_new > 0
        return "stop" if stopped else "length"

    def piece(self, token_id: int) -> str:
        """The text of one token (special tokens read "")."""
        return self._piece[token_id]

    def respond(self, r: Row) -> dict:
        text, steps = self.answer(r)
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
