"""Curation benchmark: 100k synthetic rows with planted exact duplicates, near-duplicates, eval-contaminated rows,
non-English rows and over-long rows → the whole curation (language, length in model tokens, exact dedup, MinHash
near-dedup, 13-gram decontamination) → time, rows/s, precision/recall per planted case.

Baseline, measured in the same run on the same rows as lec (a random subsample, --baseline-rows, since the
baseline is slow): the textbook implementations — near-dedup with datasketch MinHash + MinHashLSH (one Python
object per row), decontamination with a Python set of 13-gram strings — against lec's near_dedup and decontam steps
run alone on those rows with a fresh context (no words cached by the full run). Goals
(issue 6): whole curation ≤ 60 s on 2 cores; decontamination precision and recall ≥ 0.99.

    python benchmarks/curation.py [--rows 100000] [--baseline-rows 5000]
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lec import config  # noqa: E402
from lec.config import Template  # noqa: E402
from lec.data import decontam  # noqa: E402
from lec.data.filters import Context, run_steps, text_of  # noqa: E402

EN = ("the of and to in is was for on that with as by at from his her they this which have are were be one all "
      "their an has more when there been who would after first new some about other into years only also could "
      "time two over many these people most made then city year state used later during world between team "
      "river house game music school war family water light story number market power company country system "
      "because children little before night money common village paper garden winter summer question answer "
      "simple careful quick bright strong quiet early late heavy narrow broad gentle sudden ancient modern "
      "travel build write carry follow improve measure explain remember discover protect prepare compare").split()
DE = ("der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch es an werden aus er "
      "hat dass sie nach wird bei einer um am sind noch wie einem über einen so zum war haben nur oder aber vor "
      "zur bis mehr durch man sein wurde sei prozent hatte kann gegen vom können schon wenn habe seine ihre").split()


def sentence(rng: random.Random, n: int, vocab=EN) -> str:
    return " ".join(rng.choice(vocab) for _ in range(n)).capitalize() + "."


def make_rows(n: int, seed: int):
    """(rows, eval instance texts, {case: set of planted row indices}); planted rows come after the clean ones."""
    rng = random.Random(seed)
    n_exact, n_near, n_contam, n_lang, n_long = n // 50, n // 50, n // 100, n // 200, n // 200
    n_clean = n - n_exact - n_near - n_contam - n_lang - n_long
    rows = [{"instruction": sentence(rng, rng.randint(12, 30)), "input": sentence(rng, rng.randint(0, 12)),
             "output": sentence(rng, rng.randint(20, 50)), "source": "bench"} for _ in range(n_clean)]  # fmt: skip
    evals = [sentence(rng, rng.randint(20, 40)) for _ in range(2000)]
    planted = {k: set() for k in ("exact_dedup", "near_dedup", "decontam", "language", "length")}
    originals = rng.sample(range(n_clean), n_exact + n_near)
    for j in originals[:n_exact]:  # exact copies, with case and spacing changed
        r = dict(rows[j])
        r["instruction"] = "  " + r["instruction"].upper().replace(" ", "   ")
        planted["exact_dedup"].add(len(rows))
        rows.append(r)
    for j in originals[n_exact:]:  # one word of the instruction changed (Jaccard of word 5-grams ≈ 0.9)
        r = dict(rows[j])
        words = r["instruction"].split()
        words[rng.randrange(len(words))] = "zebra"
        r["instruction"] = " ".join(words)
        planted["near_dedup"].add(len(rows))
        rows.append(r)
    for _ in range(n_contam):  # a fresh row quoting 13–20 words of an eval instance somewhere in it
        words = rng.choice(evals).rstrip(".").split()
        k = rng.randint(13, 20)
        start = rng.randrange(len(words) - k + 1)
        quote = " ".join(words[start : start + k])
        field = rng.choice(["instruction", "output"])
        r = {"instruction": sentence(rng, 20), "input": "", "output": sentence(rng, 30), "source": "bench"}
        cut = rng.randrange(len(r[field]))
        cut = r[field].rfind(" ", 0, cut) + 1
        r[field] = r[field][:cut] + quote + ", " + r[field][cut:]
        planted["decontam"].add(len(rows))
        rows.append(r)
    for _ in range(n_lang):
        planted["language"].add(len(rows))
        rows.append({"instruction": sentence(rng, 25, DE), "input": "", "output": sentence(rng, 30, DE),
                     "source": "bench"})  # fmt: skip
    for _ in range(n_long):
        planted["length"].add(len(rows))
        rows.append({"instruction": sentence(rng, 20), "input": "", "output": sentence(rng, 700), "source": "bench"})
    return rows, evals, planted


def write_scenarios(root: Path, evals) -> None:
    """The eval instances in two HELM layouts: an MMLU-style CSV and a GSM-style JSONL."""
    (root / "mmlu" / "data" / "test").mkdir(parents=True)
    with (root / "mmlu" / "data" / "test" / "bench_test.csv").open("w", newline="") as f:
        csv.writer(f).writerows([q, "one", "two", "three", "four", "A"] for q in evals[:1000])
    (root / "gsm").mkdir()
    with (root / "gsm" / "gsm_data_test").open("w") as f:
        f.writelines(json.dumps({"question": q, "answer": "#### 4"}) + "\n" for q in evals[1000:])


STEPS = ("language", "length", "exact_dedup", "near_dedup", "decontam")


def dropped_by_step(rows, cfg, ctx):
    """Run the steps one at a time so each dropped row is attributed to its step: {step: dropped row indices}."""
    index = {id(r): i for i, r in enumerate(rows)}
    drops, current = {}, rows
    for step in STEPS:
        only = copy.deepcopy(cfg)
        for name in STEPS:
            getattr(only, name).enabled = name == step
        after, _ = run_steps(current, only, ctx)
        left = {id(r) for r in after}
        drops[step] = {index[id(r)] for r in current if id(r) not in left}
        current = after
    return drops


def baseline_near(texts, threshold=0.7, num_perm=128):
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    dropped = set()
    for i, t in enumerate(texts):
        toks = decontam.ngrams.tokens(t)
        m = MinHash(num_perm=num_perm)
        m.update_batch([" ".join(toks[j : j + 5]).encode() for j in range(max(1, len(toks) - 4))])
        if lsh.query(m):
            dropped.add(i)
        else:
            lsh.insert(str(i), m)
    return dropped


def baseline_decontam(texts, units, n=13):
    grams = set()
    for u in units:
        toks = decontam.ngrams.tokens(u)
        grams.update(" ".join(toks[j : j + n]) for j in range(len(toks) - n + 1))
    hits = set()
    for i, t in enumerate(texts):
        toks = decontam.ngrams.tokens(t)
        if any(" ".join(toks[j : j + n]) in grams for j in range(len(toks) - n + 1)):
            hits.add(i)
    return hits


def pr(found, planted):
    tp = len(found & planted)
    return (tp / len(found) if found else 1.0), (tp / len(planted) if planted else 1.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--baseline-rows", type=int, default=5_000)
    args = ap.parse_args()

    from lec.models import load_tokenizer, materialize_base

    cfg = config.compose(["data.curation.decontam.ngram=13"])
    base = materialize_base(cfg.model, Path(cfg.outputs_dir).resolve() / "cache")
    tok = load_tokenizer(cfg.model, path=str(base))
    rows, evals, planted = make_rows(args.rows, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        write_scenarios(Path(tmp) / "scenarios", evals)
        inst = decontam.read_scenarios(Path(tmp) / "scenarios")
    cur = config.CurationConfig()  # the shipped defaults: every step on, 13-grams, MinHash 128 × (32 bands)
    ctx = Context(Template.alpaca, tok, 1024, inst)  # clean rows stay below 1,024 tokens, the planted long ones not
    print(f"rows: {len(rows):,} ({', '.join(f'{k} {len(v):,}' for k, v in planted.items())} planted); "
          f"eval instances: {len(inst.units):,}; cores: {os.cpu_count()}")

    start = time.perf_counter()
    kept, steps = run_steps([dict(r) for r in rows], cur, ctx)
    total = time.perf_counter() - start
    print(f"\nwhole curation: {total:.1f} s, {len(rows) / total:,.0f} rows/s, {len(rows):,} → {len(kept):,} rows "
          f"(goal ≤ 60 s: {'met' if total <= 60 else 'NOT met'})")
    for s in steps:
        print(f"  {s.step:<12} {s.seconds:6.2f} s  {s.rows_in:>7,} → {s.rows_out:>7,}")

    drops = dropped_by_step(rows, cur, ctx)
    print("\nprecision / recall of the planted cases (each step's drops vs the rows planted for it):")
    for step, want in planted.items():
        p, r = pr(drops[step], want)
        print(f"  {step:<12} P {p:.4f}  R {r:.4f}  (dropped {len(drops[step]):,}, planted {len(want):,})")
    p, r = pr(drops["decontam"], planted["decontam"])
    print(f"decontam goal P,R ≥ 0.99: {'met' if min(p, r) >= 0.99 else 'NOT met'}")

    # baseline and lec on the same subsample, which holds planted cases of each kind
    rng = random.Random(1)
    sub = sorted(rng.sample(range(len(rows)), args.baseline_rows))
    sub_rows = [rows[i] for i in sub]
    texts = [text_of(r) for r in sub_rows]
    t0 = time.perf_counter()
    base_near = baseline_near(texts)
    t_base = {"near_dedup": time.perf_counter() - t0}
    t0 = time.perf_counter()
    base_dec = baseline_decontam(texts, inst.units)
    t_base["decontam"] = time.perf_counter() - t0
    t_ours, ours_found = {}, {}
    for step in ("near_dedup", "decontam"):
        only = copy.deepcopy(cur)
        for name in STEPS:
            getattr(only, name).enabled = name == step
        fresh = Context(Template.alpaca, tok, 1024, inst)
        t0 = time.perf_counter()
        after, _ = run_steps([dict(r) for r in sub_rows], only, fresh)
        t_ours[step] = time.perf_counter() - t0
        ours_found[step] = len(sub_rows) - len(after)
    print(f"\nbaseline and lec on the same {len(sub):,} rows (rows/s; rows dropped):")
    for name, found in (("near_dedup", base_near), ("decontam", base_dec)):
        b, o = len(sub) / t_base[name], len(sub) / t_ours[name]
        print(f"  {name:<12} baseline {b:>9,.0f} ({len(found)})  lec {o:>9,.0f} ({ours_found[name]})  "
              f"ratio {o / b:5.1f}×")
    contam_sub = {k for k, i in enumerate(sub) if i in planted["decontam"]}
    bp, br = pr(base_dec, contam_sub)
    print(f"  baseline decontam on the subsample: P {bp:.4f} R {br:.4f} ({len(contam_sub)} planted)")
    whole_base, whole_ours = sum(t_base.values()), sum(t_ours.values())
    print(f"near-dedup + decontam on the same rows: baseline {whole_base:.2f} s, lec {whole_ours:.2f} s, "
          f"ratio {whole_base / whole_ours:.1f}×")


if __name__ == "__main__":
    main()
