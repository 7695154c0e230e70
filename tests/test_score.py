"""The challenge scorer: exact on the organisers' published 4090 final ranking, hand-checked edge cases, HELM mode,
a lec run against the pool, and clear errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from lec import score
from lec.score import ScoreError, challenge_win_rates, helm_win_rates, score_entries

PUBLISHED = Path(score.POOLS["4090_final"])


def _published():
    return score.load_ranks(PUBLISHED)


def test_recomputes_the_published_4090_final_exactly():
    entries = _published()
    standings = score_entries(entries, "challenge")
    assert len(standings) == 8
    for (name, published), st in zip(entries, standings):
        for scenario, value in st.scenario_win_rates.items():
            assert value == pytest.approx(published[f"{scenario} Mean Win Rate"], abs=1e-9), (name, scenario)
        assert st.score_open == pytest.approx(published["Score_open"], abs=1e-9)
        assert st.score_hidden == pytest.approx(published["Score_hidden"], abs=1e-9)
        assert st.score_full == pytest.approx(published["Score_full"], abs=1e-9)
    by_full = sorted(entries, key=lambda e: -e[1]["Score_full"])
    assert [st.name for st in sorted(standings, key=lambda s: s.rank)] == [n for n, _ in by_full]
    winner = min(standings, key=lambda s: s.rank)
    assert winner.name.startswith("akjindal53244") and winner.rank == 1


def test_generalization_gap_shows_the_open_overfitter():
    """The paper's finding: the #2 entry leads the open stage but falls far behind on the closed one."""
    st = {s.name.split("_")[0]: s for s in score_entries(_published())}
    assert st["mrigankraman"].rank_open == 1 and st["mrigankraman"].rank_hidden > 4
    assert st["mrigankraman"].gap == pytest.approx(0.6305 - 0.3211, abs=1e-3)


def test_ties_share_one_over_c():
    # n = 4; the two 0.5s tie (c = 2): each beats one entry strictly and gets 1/2 for the tie → 1.5/4
    assert challenge_win_rates([0.9, 0.5, 0.5, 0.1], False) == pytest.approx([3 / 4, 1.5 / 4, 1.5 / 4, 0.0])
    assert challenge_win_rates([0.0, 0.0, 0.0, 0.0], False) == pytest.approx([0.25 / 4] * 4)


def test_missing_counts_as_worst_and_lower_is_better():
    # missing higher-is-better → 0.0, ties with the real 0.0
    assert challenge_win_rates([None, 0.0, 0.3], False) == pytest.approx([0.5 / 3, 0.5 / 3, 2 / 3])
    # bias metrics: lower is better; missing → 1000
    assert challenge_win_rates([0.1, 0.4, None], True) == pytest.approx([2 / 3, 1 / 3, 0.0])


def test_zero_scenario_collapses_the_geometric_mean():
    entries = [
        ("a", {"MMLU - EM": 0.9, "MMLU - EM (Robustness)": 0.9, "MMLU - EM (Fairness)": 0.9, "GSM8K - EM": 0.1}),
        ("b", {"MMLU - EM": 0.1, "MMLU - EM (Robustness)": 0.1, "MMLU - EM (Fairness)": 0.1, "GSM8K - EM": 0.9}),
    ]
    a, b = score_entries(entries)
    assert a.scenario_win_rates == {"MMLU": 0.5, "GSM8K": 0.0}
    assert a.score_open == pytest.approx(math.sqrt(0.5 * score.EPS)) and a.score_open < 1e-100
    assert a.score_hidden is None and a.score_full is None and a.rank == b.rank == 1  # tied at ~1e-162


def test_open_only_and_hidden_only_files():
    open_only = [(n, {k: v for k, v in m.items() if score.METRICS.get(k, (None,))[0] and
                      score.METRICS[k][0].stage == "open"}) for n, m in _published()]  # fmt: skip
    st = score_entries(open_only)
    assert all(s.score_hidden is None and s.score_full is None for s in st)
    assert [s.score_open for s in st] == pytest.approx([m["Score_open"] for _, m in _published()], abs=1e-9)
    assert sorted(s.rank for s in st) == list(range(1, 9))
    hidden_only = [(n, {k: v for k, v in m.items() if k in score.METRICS and score.METRICS[k][0].stage == "hidden"})
                   for n, m in _published()]  # fmt: skip
    st = score_entries(hidden_only)
    assert [s.score_hidden for s in st] == pytest.approx([m["Score_hidden"] for _, m in _published()], abs=1e-9)


def test_null_metrics_rank_worst():
    entries = _published()
    name, metrics = entries[0]
    entries[0] = (name, dict(metrics, **{"GSM8K - EM": None}))
    st = score_entries(entries)
    # four entries had 0.0 (tied at 1/4); the null joins them as a fifth 0.0 → 1/5 each, ÷ 8
    assert st[0].scenario_win_rates["GSM8K"] == pytest.approx((1 / 5) / 8)


def test_helm_mode_on_a_hand_computed_example():
    # values 0.9, 0.5, 0.5, None: present = 3; 0.9 beats 2 → 2/2; each 0.5 beats 0 + (2−1)/2 tie → 0.5/2
    assert helm_win_rates([0.9, 0.5, 0.5, None], False) == [1.0, 0.25, 0.25, None]
    assert helm_win_rates([0.2, None], False) == [None, None]  # fewer than two values: column skipped
    entries = [
        ("a", {"GSM8K - EM": 0.9, "BBQ - EM": 0.2}),
        ("b", {"GSM8K - EM": 0.5, "BBQ - EM": 0.8}),
        ("c", {"GSM8K - EM": 0.5}),
    ]
    a, b, c = score_entries(entries, mode="helm")
    assert a.scenario_win_rates == {"GSM8K": 1.0, "BBQ": 0.0}
    assert b.scenario_win_rates == {"GSM8K": 0.25, "BBQ": 1.0}
    assert c.scenario_win_rates == {"GSM8K": 0.25, "BBQ": None}
    assert c.score_open == pytest.approx(0.25)  # HELM skips what it cannot compare (the challenge would count 0)
    assert b.score_open == pytest.approx(0.5) and b.rank == 1


def test_a_run_against_the_pool():
    pool = _published()
    best_open = {label: 1.0 for label, (s, _) in score.METRICS.items() if s.stage == "open"}
    result = score.score_against_pool(best_open, pool)
    assert result.standing.rank_open == 1 and result.pool_size == 8
    assert result.stages == {"open": True, "hidden": False} and result.standing.score_hidden is None
    assert result.standing.score_open == pytest.approx(8 / 9)  # beats all 8 on every metric: 8/9 everywhere
    strict = score.score_against_pool(best_open, pool, only_evaluated=False)
    assert strict.standing.score_hidden < 1e-100 and strict.standing.rank > 1  # missing hidden = worst


def test_challenge_metrics_from_helm_stats():
    helm = {
        "mmlu": {"exact_match": 0.6, "exact_match@robustness": 0.5, "exact_match@fairness": 0.4},
        "big_bench_emoji_movie": {"exact_match": 0.2},
        "big_bench_strategyqa": {"exact_match": 0.4},
        "sam_sum": {"rouge_2": 0.1, "bias_metric:mode=representation,demographic_category=race": 0.3},
        "ethics_virtue": {"exact_match": 0.7},
    }
    m = score.challenge_metrics(helm)
    assert m["MMLU - EM (Fairness)"] == 0.4 and m["BIG-bench - EM"] == pytest.approx(0.3)
    assert m["sam_sum - Representation (race)"] == 0.3 and m["ethics_virtue - EM"] == 0.7
    assert "GSM8K - EM" not in m


@pytest.mark.parametrize(
    "data,message",
    [
        ({"not": "a list"}, "JSON list"),
        ([["x", {"MMLU - Accuracy": 0.5}]], "unknown metric 'MMLU - Accuracy'"),
        ([["x", {"MMLU - EM": "high"}]], "not a number"),
        ([["x"]], "not a [name"),
        ([], "no entries"),
    ],
)
def test_clear_errors(data, message):
    with pytest.raises(ScoreError, match=message.replace("[", r"\[")):
        score_entries(score.parse_ranks(data))


def test_empty_pool_is_an_error(tmp_path):
    (tmp_path / "p.json").write_text("[]")
    with pytest.raises(ScoreError, match="empty"):
        score.load_pool(str(tmp_path / "p.json"))
    with pytest.raises(ScoreError, match="empty"):
        score.score_against_pool({"GSM8K - EM": 0.5}, [])


def test_cli_json_and_errors(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lec.score", "--ranks", str(PUBLISHED), "--json"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    rows = json.loads(out.stdout)
    assert rows[0]["rank"] == 1 and rows[0]["Score_full"] == pytest.approx(0.5786321747001768, abs=1e-12)
    helm = subprocess.run([sys.executable, "-m", "lec.score", "--ranks", str(PUBLISHED), "--mode", "helm"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert "helm mode" in helm.stdout
    (tmp_path / "bad.json").write_text("{oops")
    bad = subprocess.run([sys.executable, "-m", "lec.score", "--ranks", str(tmp_path / "bad.json")],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr


def test_raw_score_leaves_lower_is_better_bias_out_of_the_scenario_mean():
    bias = next(m.label for s in score.SCENARIOS for m in s.metrics if m.lower_is_better)
    fair = score.raw_score({"sam_sum - ROUGE-2": 0.2, bias: 0.0})
    biased = score.raw_score({"sam_sum - ROUGE-2": 0.2, bias: 0.9})
    assert fair["sam_sum"] == biased["sam_sum"] == pytest.approx(0.2)
