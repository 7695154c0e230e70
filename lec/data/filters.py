"""The curation steps between loading and mixing, in order: language → length (model tokens) → exact dedup →
MinHash near-dedup → 13-gram decontamination. Each step is switchable (data.curation.*); each records rows in/out,
drops per source and a few examples per reason, so the curation report accounts for every row.

lec.data.mixture runs them over the pooled rows; lec.data.curate (the curate stage) gives them their Context.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from lec.config import CurationConfig, LengthAction, Template
from lec.data import decontam, dedup, ngrams
from lec.data.templates import adds_special_tokens, render

log = logging.getLogger(__name__)


@dataclass
class StepReport:
    step: str
    enabled: bool
    rows_in: int = 0
    rows_out: int = 0
    seconds: float = 0.0
    dropped_by_source: Dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    examples: List[Dict[str, Any]] = field(default_factory=list)
    note: str = ""


@dataclass
class Context:
    """What the steps need beyond the rows: the template, the model's tokenizer, the eval instances."""

    template: Template
    tokenizer: Any = None
    max_tokens: Optional[int] = None
    eval_instances: Optional[decontam.EvalInstances] = None
    words: ngrams.WordCache = field(default_factory=ngrams.WordCache)  # row texts tokenised once for both steps


def text_of(row: Dict[str, str]) -> str:
    return "\n".join(row[k] for k in ("text", "instruction", "input", "output") if row.get(k))


def run_steps(rows: List[Dict[str, str]], cfg: CurationConfig, ctx: Context) -> tuple:
    """(kept rows, [StepReport]) — every dropped row is counted under exactly one step."""
    steps: List[StepReport] = []
    for name, enabled, fn in (
        ("language", cfg.language.enabled, _language),
        ("length", cfg.length.enabled, _length),
        ("exact_dedup", cfg.exact_dedup.enabled, _exact),
        ("near_dedup", cfg.near_dedup.enabled, _near),
        ("decontam", cfg.decontam.enabled, _decontam),
    ):
        rep = StepReport(name, enabled, rows_in=len(rows))
        start = time.perf_counter()
        if enabled:
            drops = fn(rows, cfg, ctx, rep)  # {row index: reason detail}
            by_source: Counter = Counter()
            for i, detail in drops.items():
                by_source[rows[i]["source"]] += 1
                if len(rep.examples) < cfg.examples_per_reason:
                    rep.examples.append({"source": rows[i]["source"], "why": detail,
                                         "row": {k: v[:300] for k, v in rows[i].items() if k != "source"}})  # fmt: skip
            rows = [r for i, r in enumerate(rows) if i not in drops]
            rep.dropped_by_source = dict(by_source)
        rep.rows_out, rep.seconds = len(rows), time.perf_counter() - start
        steps.append(rep)
        if rep.rows_in != rep.rows_out:
            log.info("curation %s: %d → %d rows", name, rep.rows_in, rep.rows_out)
    return rows, steps


# --- the steps: each returns {index of a dropped row: why} -------------------------------------------------------


def _language(rows, cfg: CurationConfig, ctx: Context, rep: StepReport) -> Dict[int, str]:
    c = cfg.language
    texts = [text_of(r)[: c.max_chars] for r in rows]
    todo = [i for i, t in enumerate(texts) if len(t) >= c.min_chars]
    chunks = [[texts[i] for i in todo[k : k + 2000]] for k in range(0, len(todo), 2000)]
    workers = min(len(chunks), os.cpu_count() or 1)
    if workers > 1:  # py3langid walks every byte in Python: spread the rows over the cores
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            labels = [x for chunk in pool.map(_classify, chunks) for x in chunk]
    else:
        labels = [x for chunk in chunks for x in _classify(chunk)]
    drops = {}
    for i, (lang, prob) in zip(todo, labels):
        if lang not in c.keep and prob >= c.min_confidence:
            drops[i] = f"language {lang} (p={prob:.2f}); keep {c.keep}"
    rep.note = f"py3langid on the first {c.max_chars} chars; dropped when p ≥ {c.min_confidence}"
    return drops


def _classify(texts: List[str]) -> List[tuple]:
    import py3langid.langid as langid

    ident = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)
    return [ident.classify(t) for t in texts]


def _length(rows, cfg: CurationConfig, ctx: Context, rep: StepReport) -> Dict[int, str]:
    if ctx.tokenizer is None or ctx.max_tokens is None:
        rep.note = "skipped: no model tokenizer given (build_mixture without a tokenizer)"
        return {}
    tok, limit = ctx.tokenizer, ctx.max_tokens
    pairs = [render(ctx.template, r, tok) for r in rows]
    # No tokenizer makes more tokens than UTF-8 bytes (byte-level BPE: ≤ 1 per byte; SentencePiece byte fallback:
    # ≤ 1 per byte plus a prefix "▁"), so rows within `limit` - 8 bytes (specials, EOS) need no tokenizing.
    todo = [i for i, (p, r) in enumerate(pairs) if len(p.encode()) + len(r.encode()) + 8 > limit]
    specials = adds_special_tokens(ctx.template)
    p_ids = tok([pairs[i][0] for i in todo], add_special_tokens=specials).input_ids if todo else []
    r_ids = tok([pairs[i][1] for i in todo], add_special_tokens=False).input_ids if todo else []
    drops = {}
    for i, p, r in zip(todo, p_ids, r_ids):
        total = len(p) + len(r) + 1  # + EOS, as training appends it
        if total <= limit:
            continue
        room = limit - len(p) - 1
        if cfg.length.action is LengthAction.drop or room < 1:
            drops[i] = f"{total} tokens > {limit}" + (" (prompt alone fills it)" if room < 1 else "")
            continue
        cut = tok.decode(r[:room])
        row = rows[i]
        if "text" in row:  # plain, guanaco and chat threads: the response is the text's tail
            row["text"] = row["text"][: len(row["text"]) - len(pairs[i][1])] + cut
        else:
            row["output"] = cut
        rep.truncated += 1
    rep.note = f"model tokens of the rendered {ctx.template.value} prompt + response + EOS; limit {limit}, " \
               f"action {cfg.length.action.value}"  # fmt: skip
    return drops


def _exact(rows, cfg: CurationConfig, ctx: Context, rep: StepReport) -> Dict[int, str]:
    c = cfg.exact_dedup
    rep.note = f"key {c.key}, keep {c.keep.value}"
    return {i: f"same {'+'.join(c.key)} as row {k} ({rows[k]['source']})"
            for i, k in dedup.exact_duplicates(rows, c.key, c.keep).items()}  # fmt: skip


def _near(rows, cfg: CurationConfig, ctx: Context, rep: StepReport) -> Dict[int, str]:
    c = cfg.near_dedup
    texts = [text_of(r) for r in rows]
    found = dedup.near_duplicates(texts, c.ngram, c.num_perm, c.bands, c.threshold, c.seed, ctx.words)
    rep.note = f"MinHash {c.num_perm} perms over word {c.ngram}-grams, {c.bands} LSH bands, Jaccard ≥ {c.threshold}"
    return {i: f"near-duplicate of row {k} ({rows[k]['source']}): {text_of(rows[k])[:120]!r}" for i, k in found.items()}


def _decontam(rows, cfg: CurationConfig, ctx: Context, rep: StepReport) -> Dict[int, str]:
    inst = ctx.eval_instances
    if inst is None or not inst.available:
        rep.note = "NOT RUN: " + (inst.note if inst else "no eval instances given (build_mixture without them)")
        return {}
    c = cfg.decontam
    hits = decontam.contaminated([text_of(r) for r in rows], inst, c.ngram, c.min_tokens, ctx.words)
    rep.note = f"{c.ngram}-gram overlap with {inst.note}"
    return {i: f"overlaps eval instance in {inst.origin[u]}: {inst.units[u][:160]!r}" for i, u in hits.items()}


# --- the curate stage ---------------------------------------------------------------------------------------------
