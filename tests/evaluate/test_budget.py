"""Eval budget overrun: helm-run is stopped at the budget, and what it left unanswered scores 0."""

from __future__ import annotations

import pytest

from lec.evaluate import helm
from lec.evaluate.helm_backend import score_unanswered, suite_groups
from lec.score import challenge_metrics


def test_suite_groups_are_the_entry_scenarios_in_order():
    entries = ["mmlu:subject=a,model=x", "mmlu:subject=b,model=x", "gsm:model=x", "big_bench:task=t,model=x"]
    assert suite_groups(entries) == ["mmlu", "gsm", "big_bench"]


def test_unanswered_scenarios_score_zero_and_finished_ones_are_kept():
    metrics = {"mmlu": {"exact_match": 0.75}, "big_bench_emoji_movie": {"exact_match": 0.5}}
    missing = score_unanswered(metrics, ["mmlu", "gsm", "big_bench", "sam_sum"])
    assert missing == ["gsm", "sam_sum"]
    got = challenge_metrics(metrics)
    assert got["MMLU - EM"] == 0.75 and got["BIG-bench - EM"] == 0.5  # finished runs untouched
    assert got["GSM8K - EM"] == 0.0 and got["sam_sum - ROUGE-2"] == 0.0
    assert "sam_sum - Stereotypes (race)" not in got  # lower-is-better stays missing: the scorer ranks it worst


@pytest.mark.e2e  # a real helm-run process
@pytest.mark.slow
def test_helm_run_is_stopped_at_the_budget(tmp_path):
    """A server that never answers: helm-run would retry for minutes; the budget stops it and says so."""
    served = [helm.ServedModel("silent", "http://127.0.0.1:9", 2048, "</s>", "<s>", "0" * 16)]  # port 9: refused
    helm.write_prod_env(tmp_path / "prod_env", served, tmp_path / "requests")
    helm.write_conf(tmp_path / "e.conf", ["gsm:model={model}"], served)
    (tmp_path / "scenarios" / "gsm").mkdir(parents=True)
    for split in ("train", "test"):
        (tmp_path / "scenarios" / "gsm" / f"gsm_data_{split}").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    run = helm.helm_run(tmp_path / "e.conf", tmp_path, tmp_path / "prod_env", "s", 1, 1, 15, tmp_path / "cache")
    assert run.timed_out and run.seconds < 60
