"""Rows → token ids with the prompt masked → (optionally) packed rows → padded batches.

Packing (hardware.pack_len): several short samples share one row of `pack_len` tokens. Each sample keeps its own
position ids (0, 1, … restart at every sample) and no attention mask is passed, so transformers builds a
block-diagonal causal mask from the position ids (masking_utils.find_packed_sequence_indices for sdpa/eager;
the varlen kernel for flash_attention_2, where a micro-batch is flattened into one row): a token never attends to
another sample. The first label of every sample is ignored, so no sample is trained to predict its neighbour.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Callable, Dict, List, Tuple

import torch

from lec.plan import TrainPlan
from lec.data.templates import adds_special_tokens, render

log = logging.getLogger(__name__)
IGNORE = -100  # label id the loss skips (prompt tokens when mask_prompt, sample boundaries when packed)


def encode(rows: List[Dict[str, Any]], tokenizer, train: TrainPlan) -> List[Dict[str, List[int]]]:
    """Token ids + labels per row, at most train.seq_len tokens; the prompt is masked when data.mask_prompt, except
    the row's `trained_spans` (its in-context answers); EOS ends every response. Tokenised in one call for all rows
    (the default mixture's 1,200 rows: 0.7 s, where a call per row took 2.0 s)."""
    max_len = train.seq_len
    out, too_long = [], 0
    rendered = [render(train.template, row, tokenizer) for row in rows]
    prompts = _prompts(tokenizer, [p for p, _ in rendered], rows, train)
    responses = tokenizer([r for _, r in rendered], add_special_tokens=False).input_ids if rows else []
    for (p, p_labels), r in zip(prompts, responses):
        r = r + [tokenizer.eos_token_id]
        if len(p) >= max_len - 1:  # nothing of the response would be left to learn from
            too_long += 1
            continue
        out.append({"input_ids": (p + r)[:max_len], "labels": (p_labels + r)[:max_len]})
    if too_long:
        log.warning("%d rows dropped: their prompt alone fills max_seq_len=%d tokens", too_long, max_len)
    return out


def _prompts(tokenizer, prompts: List[str], rows: List[Dict[str, Any]],
             train: TrainPlan) -> List[Tuple[List[int], List[int]]]:  # fmt: skip
    """Each prompt's token ids and labels: IGNORE when masked, except the tokens that overlap a `trained_span` of the
    row's instruction (character ranges, placed where the template put the instruction), trained like the response."""
    specials = adds_special_tokens(train.template)
    offsets = train.mask_prompt and any(row.get("trained_spans") for row in rows)
    if offsets and not getattr(tokenizer, "is_fast", False):
        raise ValueError("trained_spans map characters to tokens with a fast tokenizer's offsets; this one is slow")
    if not prompts:
        return []
    enc = tokenizer(prompts, add_special_tokens=specials, return_offsets_mapping=offsets)
    out = []
    for k, (prompt, row, ids) in enumerate(zip(prompts, rows, enc.input_ids)):
        if not train.mask_prompt:
            out.append((ids, list(ids)))
            continue
        labels = [IGNORE] * len(ids)
        if row.get("trained_spans"):
            start = prompt.find(row["instruction"])  # 0 for raw
            if start < 0:
                raise ValueError("a row with trained_spans needs its instruction verbatim in the rendered prompt")
            spans, j = [(start + a, start + b) for a, b in row["trained_spans"]], 0
            for t, (s, e) in enumerate(enc.offset_mapping[k]):  # both in order: one pass
                while j < len(spans) and spans[j][1] <= s:
                    j += 1
                if j < len(spans) and spans[j][0] < e:  # the token's characters meet the span
                    labels[t] = ids[t]
        out.append((ids, labels))
    return out


def pack(rows: List[Dict[str, List[int]]], pack_len: int) -> List[Dict[str, List[int]]]:
    """Best-fit-decreasing packing of encoded rows into rows of at most `pack_len` tokens.

    Every output row carries `position_ids` that restart at 0 for each sample; a sample's first label is IGNORE.
    Deterministic for a given input order (ties keep input order).
    """
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]["input_ids"]))
    bins: List[List[int]] = []  # row indices per packed row
    room: Dict[int, List[int]] = {}  # free tokens → bins with exactly that much room
    for i in order:
        n = len(rows[i]["input_ids"])
        if n > pack_len:
            raise ValueError(f"a row of {n} tokens does not fit pack_len={pack_len}; set hardware.pack_len ≥ hardware.max_seq_len")
        free = next((f for f in range(n, pack_len + 1) if room.get(f)), None)  # the tightest bin it fits
        if free is None:
            bins.append([])
            b, free = len(bins) - 1, pack_len
        else:
            b = room[free].pop()
        bins[b].append(i)
        room.setdefault(free - n, []).append(b)
    out = []
    for members in bins:
        ids, labels, pos = [], [], []
        for i in members:
            r = rows[i]
            ids += r["input_ids"]
            labels += [IGNORE] + r["labels"][1:]
            pos += list(range(len(r["input_ids"])))
        out.append({"input_ids": ids, "labels": labels, "position_ids": pos})
    log.info("packed %d rows into %d rows of ≤ %d tokens (%.0f %% full)", len(rows), len(out), pack_len,
             100 * sum(len(r["input_ids"]) for r in rows) / max(1, len(out) * pack_len))  # fmt: skip
    return out


def collate(pad_id: int, flatten: bool = False, head_where_labelled: bool = False) -> Callable:
    """Pad a micro-batch to its longest row. Packed rows (with position_ids) get no attention mask; with
    `flatten` (flash_attention_2) the micro-batch becomes one row, which the varlen kernel splits by position ids.

    `head_where_labelled` (a model whose forward takes `logits_to_keep` and a loss that takes `shift_labels`, as
    transformers' own causal LMs do): the LM head and the loss run only at the positions where some row of the
    micro-batch predicts a label. With the prompt masked that is a third of the positions of the smoke mixture, and
    the head of a small-vocabulary model is a third of its compute; the loss and its gradients are the same."""

    def fn(batch: List[Dict[str, List[int]]]) -> Dict[str, torch.Tensor]:
        packed = "position_ids" in batch[0]
        if packed and flatten:
            batch = [{k: sum((b[k] for b in batch), []) for k in ("input_ids", "labels", "position_ids")}]
        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), pad_id)
        labels = torch.full((len(batch), n), IGNORE)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        pos = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k], labels[i, :k], mask[i, :k] = torch.tensor(b["input_ids"]), torch.tensor(b["labels"]), 1
            if packed:  # padding is one more "sample" of its own, so it attends to nothing real
                pos[i, :k], pos[i, k:] = torch.tensor(b["position_ids"]), torch.arange(n - k)
        out = {"input_ids": ids, "labels": labels, **({"position_ids": pos} if packed else {"attention_mask": mask})}
        if head_where_labelled:  # position p predicts token p + 1: keep the p whose next label is set in some row
            shifted = torch.cat([labels[:, 1:], torch.full((len(batch), 1), IGNORE)], dim=1)
            keep = (shifted != IGNORE).any(dim=0).nonzero().squeeze(1)
            out.update(logits_to_keep=keep, shift_labels=shifted[:, keep])
        return out

    return fn


def head_where_labelled(model) -> bool:
    """Does `model` (or the model a peft wrapper holds) take `logits_to_keep` and a loss with `shift_labels`?
    transformers' causal LMs do; a hub model's own code (trust_remote_code) may not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    loss = getattr(base, "loss_function", None)
    return "logits_to_keep" in inspect.signature(base.forward).parameters and loss is not None \
        and "shift_labels" in inspect.signature(loss).parameters  # fmt: skip
