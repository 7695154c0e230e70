"""Sample packing: rows share a sequence without seeing each other (position ids restart per sample)."""

from __future__ import annotations

import pytest
import torch

from lec.models import load_model
from lec.train.packing import IGNORE, collate, pack


def _rows(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        ids = torch.randint(4, 200, (n,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [IGNORE] * (n // 3) + ids[n // 3:]})
    return rows


def test_pack_fills_rows_and_keeps_every_token():
    rows = _rows([50, 40, 30, 30, 20, 10, 64, 5])
    packed = pack(rows, 64)
    assert all(len(p["input_ids"]) <= 64 for p in packed)
    assert sum(len(p["input_ids"]) for p in packed) == sum(len(r["input_ids"]) for r in rows)
    assert len(packed) == 5  # best-fit decreasing: 64 | 50+10 | 40+20 | 30+30 | 5
    for p in packed:  # position ids restart at each sample and every sample's first label is ignored
        starts = [i for i, q in enumerate(p["position_ids"]) if q == 0]
        assert all(p["labels"][i] == IGNORE for i in starts)
    with pytest.raises(ValueError, match="pack_len"):
        pack(_rows([65]), 64)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_unpacked(tiny_dir, default_cfg, attn):
    """No cross-contamination: each sample's logits inside a packed row equal its logits alone."""
    model = load_model(default_cfg.model, path=str(tiny_dir), attn_implementation=attn).eval()
    rows = _rows([23, 17, 9])
    batch = collate(0)(pack(rows, 64))
    assert "attention_mask" not in batch and batch["position_ids"].shape == batch["input_ids"].shape
    with torch.no_grad():
        # use_cache=False as in training (prepare_model): a KV cache turns transformers' packed-mask detection off
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        offset = 0
        for r in sorted(rows, key=lambda r: -len(r["input_ids"])):  # pack places longest first
            n = len(r["input_ids"])
            alone = model(input_ids=torch.tensor([r["input_ids"]])).logits[0]
            torch.testing.assert_close(packed[offset:offset + n], alone, atol=1e-4, rtol=1e-4)
            offset += n


def test_collate_pads_packed_rows_as_their_own_segment():
    batch = collate(0)(pack(_rows([30, 20, 60]), 64))
    pos = batch["position_ids"]
    assert pos.shape[0] == 2 and (batch["labels"][1, 50:] == IGNORE).all()  # second row: 30 + 20, then padding
    assert pos[1, 50].item() == 0  # padding restarts positions: attends only to padding
    flat = collate(0, flatten=True)(pack(_rows([30, 20, 60]), 64))  # flash_attention_2: one row per micro-batch
    assert flat["input_ids"].shape == (1, 110)


def test_training_model_has_no_kv_cache(tiny_dir, default_plan):
    from lec.train.finetune import prepare_model

    model, trainable = prepare_model(default_plan.train, default_plan.model, tiny_dir)
    assert model.config.use_cache is False and 0 < trainable < model.num_parameters()


def test_encode_trains_on_every_answer_of_a_few_shot_row(tiny_dir, default_plan):
    """A row's trained_spans (its in-context answers) are trained on like its response, under any template that
    puts the instruction in the prompt verbatim; the tokens are those of the whole prompt, only the labels change."""
    import dataclasses

    from transformers import AutoTokenizer

    from lec.config import Template
    from lec.data import synthetic as syn
    from lec.train.packing import encode

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    row = syn.mmlu_order_rows(1, 0)[0]
    answers = [row["instruction"][a:b] for a, b in row["trained_spans"]] + [row["output"], tok.eos_token]
    for template in (Template.raw, Template.alpaca):
        plan = dataclasses.replace(default_plan.train, template=template)
        (enc,) = encode([row], tok, plan)
        assert [tok.decode([i]) for i, label in zip(enc["input_ids"], enc["labels"]) if label != IGNORE] == answers
        assert all(label in (IGNORE, i) for i, label in zip(enc["input_ids"], enc["labels"]))
    (raw,) = encode([row], tok, default_plan.train)
    assert raw["input_ids"][:-2] == tok(row["instruction"]).input_ids  # the prompt tokenised whole, as served
    (plain,) = encode([{**row, "trained_spans": []}], tok, default_plan.train)  # no spans: the answer alone
    assert [tok.decode([i]) for i, label in zip(plain["input_ids"], plain["labels"]) if label != IGNORE] == answers[-2:]
    (unmasked,) = encode([row], tok, dataclasses.replace(default_plan.train, mask_prompt=False))
    assert unmasked["labels"] == unmasked["input_ids"]

    class Slow:  # a tokenizer without character offsets (no Rust backend)
        is_fast, eos_token_id = False, tok.eos_token_id

        def __call__(self, *args, **kwargs):
            return tok(*args, **kwargs)

    with pytest.raises(ValueError, match="fast tokenizer"):
        encode([row], Slow(), default_plan.train)


def test_the_head_only_where_labelled_gives_the_same_loss_and_gradients(tiny_dir, default_plan):
    """collate(head_where_labelled=True): logits_to_keep + shift_labels leave out the positions no row of the
    micro-batch learns from; the loss and every LoRA gradient are those of the full head (on the smoke mixture's
    few-shot rows, where a third of the positions are kept)."""
    from transformers import AutoTokenizer

    from lec.data import synthetic as syn
    from lec.train.finetune import attach_adapter
    from lec.train.packing import encode, head_where_labelled

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    rows = encode(syn.mmlu_order_rows(3, 0) + syn.gsm_arith_rows(1, 0), tok, default_plan.train)
    torch.manual_seed(0)
    model = attach_adapter(load_model(default_plan.model, path=str(tiny_dir)), default_plan.train)
    for _, p in model.named_parameters():  # LoRA's B starts at 0: give it values, so every gradient is non-zero
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    assert head_where_labelled(model)
    results = []
    for head in (False, True):
        batch = collate(tok.pad_token_id, head_where_labelled=head)(rows)
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
        if head:
            assert 0 < len(batch["logits_to_keep"]) < batch["input_ids"].shape[1] / 2
    (full, grads), (kept, kept_grads) = results
    assert torch.allclose(full, kept, rtol=1e-5, atol=1e-6) and grads.keys() == kept_grads.keys()
    for name in grads:
        assert torch.allclose(grads[name], kept_grads[name], rtol=1e-4, atol=1e-6), name
