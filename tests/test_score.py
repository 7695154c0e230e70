"""Challenge metric mapping and the first, pool-free score."""

from __future__ import annotations

import math

import pytest

from lec import score


def test_maps_helm_stats_to_challenge_metrics():
    scen = {
        "mmlu": {"exact_match": 0.6, "exact_match@robustness": 0.5, "exact_match@fairness": 0.4},
        "gsm": {"exact_match_indicator": 0.3, "final_number_exact_match": 0.9},
        "big_bench_emoji_movie": {"exact_match": 0.2},
        "big_bench_strategyqa": {"exact_match": 0.4},
        "something_else": {"exact_match": 1.0},
    }
    out = score.challenge_metrics(scen)
    assert out["mmlu"] == {"MMLU - EM": 0.6, "MMLU - EM (Robustness)": 0.5, "MMLU - EM (Fairness)": 0.4}
    assert out["gsm"] == {"GSM8K - EM": 0.3}
    assert out["big_bench"]["BIG-bench - EM"] == pytest.approx(0.3)  # pooled over tasks
    assert "something_else" not in out


def test_raw_score_is_the_eps_guarded_geometric_mean():
    s = score.raw_score({"mmlu": {"a": 0.5, "b": 0.25, "c": None}, "gsm": {"GSM8K - EM": 0.5}})
    assert s["mmlu"] == pytest.approx(0.25) and s["raw_score"] == pytest.approx(math.sqrt(0.25 * 0.5))
    zero = score.raw_score({"mmlu": {"a": 0.0}, "gsm": {"b": 1.0}})
    assert 0 < zero["raw_score"] < 1e-100  # one zero scenario collapses the score, as in the challenge
