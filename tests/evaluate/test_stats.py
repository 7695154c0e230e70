"""stats.json parsing and helm-summarize-style aggregation, on files in HELM 0.5.16's format."""

from __future__ import annotations

import json

import pytest

from lec.evaluate.stats import read_suite, scenario_metrics

WORST = {"computed_on": "worst", "fairness": False, "robustness": True, "name": "robustness"}


def _run(root, name, model, group, em, em_rob, split="test"):
    d = root / "runs" / "s" / name
    d.mkdir(parents=True)
    (d / "run_spec.json").write_text(json.dumps({"name": name, "adapter_spec": {"model": model}, "groups": [group]}))
    stats = [
        {"name": {"name": "exact_match", "split": split}, "count": 1, "sum": em, "mean": em},
        {"name": {"name": "exact_match", "split": split, "perturbation": WORST}, "count": 1, "mean": em_rob},
        {"name": {"name": "exact_match", "split": split, "perturbation": dict(WORST, computed_on="perturbed",
                                                                              name="typo")}, "count": 1, "mean": 9},
        {"name": {"name": "exact_match", "split": "train"}, "count": 1, "mean": 0.123},
        {"name": {"name": "num_instances", "split": split}, "count": 1, "mean": 40.0},
        {"name": {"name": "empty_stat", "split": split}, "count": 0, "mean": 0.0},
    ]  # fmt: skip
    (d / "stats.json").write_text(json.dumps(stats))


def test_scenario_value_is_the_unweighted_mean_over_runs(tmp_path):
    _run(tmp_path, "mmlu:subject=a,model=lec_tuned", "lec/tuned", "mmlu", 1.0, 0.5)
    _run(tmp_path, "mmlu:subject=b,model=lec_tuned", "lec/tuned", "mmlu", 0.5, 0.25)
    _run(tmp_path, "mmlu:subject=a,model=lec_base", "lec/base", "mmlu", 0.0, 0.0)
    _run(tmp_path, "ethics:model=lec_tuned", "lec/tuned", "ethics_justice", 0.7, 0.6, split="valid")
    unfinished = tmp_path / "runs" / "s" / "gsm:model=lec_tuned"
    unfinished.mkdir()
    (tmp_path / "runs" / "s" / "eval_cache").mkdir()
    runs = read_suite(tmp_path, "s")
    assert len(runs) == 4
    m = scenario_metrics(runs)
    assert m["lec/tuned"]["mmlu"]["exact_match"] == pytest.approx(0.75)
    assert m["lec/tuned"]["mmlu"]["exact_match@robustness"] == pytest.approx(0.375)
    assert "exact_match@typo" not in m["lec/tuned"]["mmlu"] and "empty_stat" not in m["lec/tuned"]["mmlu"]
    assert m["lec/tuned"]["ethics_justice"]["exact_match"] == 0.7  # valid split when there is no test split
    assert m["lec/base"]["mmlu"] == {"exact_match": 0.0, "exact_match@robustness": 0.0, "num_instances": 40.0}
