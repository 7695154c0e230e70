"""Curation steps on planted cases: language, length in model tokens, exact/near dedup, 13-gram decontamination,
and the curation report that accounts for every row."""

from __future__ import annotations

import json
import random

import pytest

from lec import config, plan
from lec.config import DataConfig, DedupKeep, LengthAction, SourceConfig, Template
from lec.data import decontam, dedup
from lec.data.curate import curate
from lec.data.filters import Context, run_steps
from lec.data.mixture import build_mixture, read_jsonl

ENGLISH = "The committee reviewed the proposal carefully and decided to postpone the final vote until next month."
GERMAN = "Der Ausschuss hat den Vorschlag sorgfältig geprüft und beschlossen, die Abstimmung auf nächsten Monat zu verschieben."
FRENCH = "Le comité a examiné la proposition avec soin et a décidé de reporter le vote final au mois prochain."


def _only(step: str) -> config.CurationConfig:
    c = config.CurationConfig()
    for name in ("language", "length", "exact_dedup", "near_dedup", "decontam"):
        getattr(c, name).enabled = name == step
    return c


def _rows(texts, source="s"):
    return [{"instruction": t, "input": "", "output": "ok", "source": source} for t in texts]


def _words(rng, n):
    return " ".join(f"w{rng.randrange(10**6)}" for _ in range(n))


def test_language_filter_drops_confident_non_english():
    rows = _rows([ENGLISH, GERMAN, FRENCH, "Was?"])  # the last is too short to judge: kept
    kept, (step, *_) = run_steps(rows, _only("language"), Context(Template.alpaca))
    assert [r["instruction"] for r in kept] == [ENGLISH, "Was?"]
    assert step.rows_in == 4 and step.rows_out == 2 and step.dropped_by_source == {"s": 2}
    assert {e["why"].split()[1] for e in step.examples} == {"de", "fr"}


def test_length_filter_counts_model_tokens_and_drops_or_truncates(default_cfg, tiny_dir):
    from lec.models import load_tokenizer

    tok = load_tokenizer(default_cfg.model, path=str(tiny_dir))
    long_out = " ".join(["12 apples"] * 60)
    rows = [{"instruction": "Q: count", "input": "", "output": "short", "source": "s"},
            {"instruction": "Q: count", "input": "", "output": long_out, "source": "s"},
            {"instruction": "Q: " + "9 " * 80, "input": "", "output": "x", "source": "s"}]  # fmt: skip
    cur = _only("length")
    kept, steps = run_steps([dict(r) for r in rows], cur, Context(Template.raw, tok, 64))
    step = steps[1]
    assert step.step == "length" and [r["output"] for r in kept] == ["short"] and step.rows_out == 1
    cur.length.action = LengthAction.truncate
    kept, steps = run_steps([dict(r) for r in rows], cur, Context(Template.raw, tok, 64))
    step = steps[1]
    assert len(kept) == 2 and step.truncated == 1  # the prompt-only-too-long row is dropped either way
    cut = kept[1]
    assert long_out.startswith(cut["output"]) and len(cut["output"]) < len(long_out)
    assert len(tok(cut["instruction"]).input_ids) + len(tok(cut["output"], add_special_tokens=False).input_ids) < 64


def test_exact_dedup_normalises_and_keeps_longest_output():
    rows = [{"instruction": "What is  2+2?", "input": "", "output": "4", "source": "a"},
            {"instruction": "what is 2+2?", "input": "", "output": "It is 4.", "source": "b"},
            {"instruction": "What is 3+3?", "input": "", "output": "6", "source": "a"}]  # fmt: skip
    assert dedup.exact_duplicates(rows, ["instruction", "input"], DedupKeep.longest_output) == {0: 1}
    assert dedup.exact_duplicates(rows, ["instruction", "input"], DedupKeep.first) == {1: 0}


def test_minhash_estimates_agree_with_datasketch_and_find_planted_near_duplicates():
    from datasketch import MinHash

    rng = random.Random(0)
    base = [_words(rng, 60) for _ in range(200)]
    texts = list(base)
    planted = {}
    for i in range(0, 200, 4):  # every 4th text gets a copy with 1 of its 60 words changed (Jaccard ≈ 0.84)
        w = base[i].split()
        w[rng.randrange(60)] = "changed"
        planted[len(texts)] = i
        texts.append(" ".join(w))
    for i in range(1, 200, 20):  # and some with every 10th word changed (Jaccard ≈ 0.3): related, not duplicates
        w = base[i].split()
        for j in range(5, 60, 10):
            w[j] = "changed"
        texts.append(" ".join(w))
    found = dedup.near_duplicates(texts, ngram=5, num_perm=128, bands=32, threshold=0.7)
    assert found == planted  # recall 1, precision 1 on this set

    sig = dedup.signatures(texts[:2] + texts[200:201], 5, 256, seed=3)
    ours = (sig[0] == sig[2]).mean()  # text 0 vs its near copy

    def ds(t):
        m = MinHash(num_perm=256, seed=3)
        toks = t.split()
        m.update_batch([" ".join(toks[i : i + 5]).encode() for i in range(len(toks) - 4)])
        return m

    sh = [set(" ".join(t.split()[i : i + 5]) for i in range(56)) for t in (texts[0], texts[200])]
    true = len(sh[0] & sh[1]) / len(sh[0] | sh[1])
    assert abs(ours - true) < 0.1 and abs(ds(texts[0]).jaccard(ds(texts[200])) - true) < 0.1
    assert (sig[0] == sig[1]).mean() < 0.05  # unrelated texts


def test_decontam_finds_planted_13_gram_overlaps_in_scenario_files(tmp_path):
    """A fake HELM scenarios dir in three layouts; training rows with a planted 13-word span are dropped."""
    rng = random.Random(1)
    questions = [_words(rng, 30) for _ in range(20)]
    short = "which planet is known as the red planet today"  # 9 words: must occur whole
    root = tmp_path / "scenarios"
    (root / "mmlu" / "data" / "test").mkdir(parents=True)
    (root / "mmlu" / "data" / "test" / "x_test.csv").write_text(
        "".join(f'"{q}",opt a,opt b,opt c,opt d,A\n' for q in questions[:10]))
    (root / "gsm").mkdir()
    (root / "gsm" / "gsm_data_test").write_text("".join(json.dumps({"question": q, "answer": "#### 3"}) + "\n"
                                                        for q in questions[10:15]))  # fmt: skip
    (root / "truthful_qa").mkdir()
    (root / "truthful_qa" / "q.json").write_text(json.dumps([{"q": q} for q in questions[15:]] + [{"q": short}]))
    inst = decontam.read_scenarios(root, ["mmlu", "gsm", "truthful_qa", "bbq"])
    assert inst.available and inst.missing == ["bbq"] and len(inst.files) == 3

    train = [_words(rng, 40) for _ in range(300)]
    planted = {}
    for k, i in enumerate(range(0, 300, 15)):
        q = questions[k].split()
        span = " ".join(q[5:18])  # exactly 13 words of an eval question
        train[i] = train[i][:50] + " " + span.upper() + ", " + train[i][50:]  # case/punctuation do not hide it
        planted[i] = k
    train[7] = "Tell me: which planet is known as the RED planet today? Mars."
    train[8] = "which planet is known as the red planet"  # only part of the short instance: not contaminated
    hits = decontam.contaminated(train, inst, n=13, min_tokens=8)
    assert set(hits) == set(planted) | {7}
    assert all(inst.units[hits[i]].startswith(questions[k]) for i, k in planted.items())

    span12 = " ".join(questions[0].split()[:12])  # 12 shared words are below the 13-gram bar
    assert decontam.contaminated([span12], inst, n=13, min_tokens=8) == {}


def test_decontam_without_scenario_files_says_so(tmp_path):
    p = plan.build(config.compose(["eval=open_600", f"outputs_dir={tmp_path}"]))
    from lec.data.curate import eval_instances

    inst = eval_instances(p.data, p.eval, tmp_path)
    assert not inst.available and "not available" in inst.note and "scenarios_dir" in inst.note
    assert "mmlu" in inst.missing
    rows = _rows([ENGLISH])
    _, steps = run_steps(rows, _only("decontam"), Context(Template.alpaca, eval_instances=inst))
    assert steps[-1].note.startswith("NOT RUN") and steps[-1].rows_out == 1


def _curate(p, out_dir, tiny_dir, outputs_dir):
    return curate(p.data, p.train.seq_len, p.model, p.eval, out_dir, tiny_dir, outputs_dir)


def test_default_curation_drops_no_smoke_eval_item_but_catches_a_leaked_one(default_plan, tiny_dir, tmp_path):
    """The smoke eval items are held out by construction: the default decontaminates to zero drops; a training row
    that quotes an eval item (as a real leak would) is dropped and shown in the report."""
    mix = _curate(default_plan, tmp_path / "a", tiny_dir, tmp_path)
    step = {s.step: s for s in mix.steps}["decontam"]
    assert mix.decontam["available"] and mix.decontam["instances"] > 100
    assert step.enabled and step.rows_in == step.rows_out == sum(s.n for s in default_plan.data.sources)

    gsm = [json.loads(line) for line in _smoke_file(default_plan, tmp_path, "gsm/gsm_data_test")]
    leak = tmp_path / "leak.jsonl"
    leak.write_text("".join(json.dumps({"instruction": f"Q: {g['question']}\nA:", "output": " 1"}) + "\n"
                            for g in gsm[:3]))  # fmt: skip
    cfg = config.compose([])
    cfg.data.sources.append(SourceConfig(name="leak", local_path=str(leak)))
    mix = _curate(plan.build(cfg), tmp_path / "b", tiny_dir, tmp_path)
    step = {s.step: s for s in mix.steps}["decontam"]
    assert step.dropped_by_source == {"leak": 3} and "gsm_data_test" in step.examples[0]["why"]
    report = json.loads((tmp_path / "b" / "curation_report.json").read_text())
    assert {s["step"] for s in report["steps"]} == {"language", "length", "exact_dedup", "near_dedup", "decontam"}
    src = {s["name"]: s for s in report["sources"]}
    assert src["leak"]["rows_in"] == 3 and src["leak"]["curated"] == 0


def _smoke_file(p, tmp_path, rel):
    from lec.evaluate.smoke_data import write_scenarios

    write_scenarios(tmp_path / "helm", p.eval.synthetic)
    return (tmp_path / "helm" / "scenarios" / rel).read_text().splitlines()


def test_every_row_is_accounted_for(tmp_path):
    """rows read = bad + filtered + llm_generated + not_taken + dropped by steps + curated."""
    rows = [{"instruction": ENGLISH, "output": "a", "data_source": "x"}, {"instruction": ENGLISH, "output": "a"},
            {"instruction": GERMAN, "output": "b"}, {"instruction": "", "output": "c"},
            {"instruction": "kept question", "output": "d", "data_source": "airoboros"}]  # fmt: skip
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(name="x", val_fraction=0.0, sources=[SourceConfig(name="s", local_path=str(path))])
    mix = build_mixture(cfg, tmp_path / "o")
    (s,) = mix.sources
    dropped = sum(sum(st.dropped_by_source.values()) for st in mix.steps)
    assert (s.rows_in, sum(s.bad.values()), s.llm_generated, dropped, s.curated) == (5, 1, 1, 2, 1)
    assert s.rows_in == sum(s.bad.values()) + s.filtered + s.llm_generated + s.not_taken + dropped + s.curated
    assert len(read_jsonl(mix.train_path)) == 1


@pytest.mark.parametrize("bad", ["data.curation.near_dedup.threshold=1.5", "data.curation.length.action=cut",
                                 "data.sources.0.fraction=0", "data.resample_epochs=0"])  # fmt: skip
def test_bad_curation_config_fails_at_compose(bad):
    with pytest.raises(Exception, match="threshold|action|fraction|resample_epochs|LengthAction"):
        config.compose([bad])


def test_word_cache_gives_what_word_hashes_gives_and_tokenises_each_text_once():
    from lec.data import ngrams

    first = ["The quick brown fox jumps.", "", "Question: 12 + 40?\nA. 52", "the quick brown fox jumps"]
    later = first[2:] + ["A new text with new words", first[0], first[0]]
    cache = ngrams.WordCache()
    for texts in (first, later):
        words, offsets = cache.hashes(texts)
        want_words, want_offsets = ngrams.word_hashes(texts, {})
        assert words.tolist() == want_words.tolist() and offsets.tolist() == want_offsets.tolist()
    assert len(cache.index) == len(set(first) | set(later))  # each distinct text tokenised once


@pytest.mark.parametrize("n_words, matched", [(7, False), (8, True), (12, True), (13, True)])
def test_decontam_min_tokens_boundary(n_words, matched):
    """min_tokens=8, ngram=13: an instance of 8..12 words counts when it occurs whole, one of 7 never does (too
    common to mean a leak), one of 13 is an ordinary 13-gram."""
    instance = " ".join(f"w{i}" for i in range(n_words))
    inst = decontam.EvalInstances(units=[instance, " ".join(f"z{i}" for i in range(30))], available=True)
    train = [f"Some preamble words here: {instance} and then more words after it"]
    hits = decontam.contaminated(train, inst, n=13, min_tokens=8)
    assert (hits == {0: 0}) is matched
    if matched and n_words < 13:  # a short instance must occur whole: one word fewer is not a match
        assert decontam.contaminated([" ".join(f"w{i}" for i in range(n_words - 1))], inst, 13, 8) == {}
