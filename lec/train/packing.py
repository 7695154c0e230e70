"""Rows → token ids with the prompt masked → (optionally) packed rows → padded batches.

Packing (hardware.pack_len): several short samples share one row of `pack_len` tokens. Each sample keeps its own
position ids (0, 1, … restart at every sample) and no attention mask is passed, so transformers builds a
block-diagonal causal mask from the position ids (masking_utils.find_packed_sequence_indices for sdpa/eager;
the varlen kernel for flash_attention_2, where a micro-batch is flattened into one row): a token never attends to
another sample. The first label of every sample is ignored, so no sample is trained to predict its neighbour.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Tuple

import torch

from lec.plan import TrainPlan
from lec.data.templates import adds_special_tokens, render

log = logging.getLogger(__name__)
IGNORE = -100  # label id the loss skips (prompt tokens when mask_prompt, sample boundaries when packed)


def encode(rows: List[Dict[str, str]], tokenizer, train: TrainPlan) -> List[Dict[str, List[int]]]:
    """Token ids + labels per row, at most train.seq_len tokens; the prompt is masked when data.mask_prompt, EOS
    ends every response."""
    max_len = train.seq_len
    out, too_long = [], 0
    specials = adds_special_tokens(train.template)
    for row in rows:
        prompt, response = render(train.template, row, tokenizer)
        p, p_labels = _prompt(tokenizer, prompt, specials, row, train.mask_prompt)
        r = tokenizer(response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        if len(p) >= max_len - 1:  # nothing of the response would be left to learn from
            too_long += 1
            continue
        ids = (p + r)[:max_len]
        out.append({"input_ids": ids, "labels": (p_labels + r)[:max_len]})
    if too_long:
        log.warning("%d rows dropped: their prompt alone fills max_seq_len=%d tokens", too_long, max_len)
    return out


def _prompt(tokenizer, prompt: str, specials: bool, row: Dict, mask_prompt: bool) -> Tuple[List[int], List[int]]:
    """The prompt's token ids and labels: all IGNORE when masked, except the tokens that overlap a `trained_span` of
    the row's instruction (the in-context answers of a few-shot row), which are trained on like the response."""
    spans = row.get("trained_spans") if mask_prompt else None
    if not spans:
        ids = tokenizer(prompt, add_special_tokens=specials).input_ids
        return ids, ([IGNORE] * len(ids) if mask_prompt else list(ids))
    start = prompt.find(row["instruction"])  # where the template put the instruction (0 for raw)
    if start < 0:
        raise ValueError("a row with trained_spans needs its instruction verbatim in the rendered prompt")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("trained_spans map characters to tokens with a fast tokenizer's offsets; this one is slow")
    enc = tokenizer(prompt, add_special_tokens=specials, return_offsets_mapping=True)
    wanted = [(start + a, start + b) for a, b in spans]
    labels = [i if any(s < b and a < e for a, b in wanted) else IGNORE  # the token's characters meet a span
              for i, (s, e) in zip(enc.input_ids, enc.offset_mapping)]  # fmt: skip
    return enc.input_ids, labels


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


def collate(pad_id: int, flatten: bool = False) -> Callable:
    """Pad a micro-batch to its longest row. Packed rows (with position_ids) get no attention mask; with
    `flatten` (flash_attention_2) the micro-batch becomes one row, which the varlen kernel splits by position ids."""

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
        if packed:
            return {"input_ids": ids, "labels": labels, "position_ids": pos}
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return fn
