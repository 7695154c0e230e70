"""Seed the smoke suite's scenario files where HELM's real scenario classes read them (helm_challenge.md §5.2).

HELM's `ensure_file_downloaded` skips any path that exists, so these files are what `helm-run` evaluates on.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from lec.config import SyntheticEvalConfig
from lec.data.synthetic import draw, gsm_arith, mmlu_order


def write_scenarios(helm_output: Path, cfg: SyntheticEvalConfig) -> dict:
    """MMLU CSVs (dev = in-context pool, test = eval) and GSM8K JSONL (train = pool, test = eval)."""
    counts = {}
    for i, subject in enumerate(cfg.mmlu_subjects):
        rng = random.Random(cfg.seed + i)
        root = helm_output / "scenarios" / "mmlu" / "data"
        for split, n in (("dev", cfg.n_fewshot), ("test", cfg.n_eval)):
            path = root / split / f"{subject}_{split}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as f:
                csv.writer(f).writerows(draw(mmlu_order, rng, for_eval=True).csv_row() for _ in range(n))
        counts[f"mmlu/{subject}"] = cfg.n_eval
    rng = random.Random(cfg.seed + 1000)
    root = helm_output / "scenarios" / "gsm"
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", cfg.n_fewshot), ("test", cfg.n_eval)):
        with (root / f"gsm_data_{split}").open("w") as f:
            for _ in range(n):
                item = draw(gsm_arith, rng, for_eval=True)
                f.write(json.dumps({"question": item.question, "answer": item.jsonl_answer()}) + "\n")
    counts["gsm"] = cfg.n_eval
    return counts
