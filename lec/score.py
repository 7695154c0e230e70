"""The challenge's metrics per scenario and a first, pool-free score.

Which HELM stat feeds which challenge metric comes from the organisers' `ranking_metrics.py` and HELM's schema
(helm_challenge.md §2.3, §4.1). The challenge ranked entries by win rates against each other; a single run has no
win rate, so this first version scores a run on its own: the mean of each scenario's challenge metrics, then the
challenge's eps-guarded geometric mean over scenarios. Ranking against a reference pool builds on these values.
"""

from __future__ import annotations

import math
from statistics import geometric_mean, mean
from typing import Dict, List, NamedTuple, Optional

EPS = math.nextafter(0.0, math.inf)  # the organisers replace a 0 scenario score by the smallest positive float


class Metric(NamedTuple):
    label: str  # the challenge's name, e.g. "MMLU - EM (Robustness)"
    key: str  # lec's HELM stat key (lec/evaluate/stats.py metric_key)
    lower_is_better: bool = False


OPEN_SCENARIOS: Dict[str, List[Metric]] = {
    "mmlu": [
        Metric("MMLU - EM", "exact_match"),
        Metric("MMLU - EM (Robustness)", "exact_match@robustness"),
        Metric("MMLU - EM (Fairness)", "exact_match@fairness"),
    ],
    "truthful_qa": [
        Metric("TruthfulQA - EM", "exact_match"),
        Metric("TruthfulQA - EM (Robustness)", "exact_match@robustness"),
        Metric("TruthfulQA - EM (Fairness)", "exact_match@fairness"),
    ],
    "big_bench": [Metric("BIG-bench - EM", "exact_match")],
    "gsm": [Metric("GSM8K - EM", "exact_match_indicator")],
    "bbq": [Metric("BBQ - EM", "quasi_exact_match")],
}


def scenario_of(helm_group: str) -> str:
    """HELM 0.5.x names BIG-bench groups big_bench_<task> (helm_challenge.md §2.3); the challenge pools them."""
    return "big_bench" if helm_group.startswith("big_bench") else helm_group


def challenge_metrics(scenarios: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, Optional[float]]]:
    """{scenario: {challenge metric label: value or None}} for the challenge scenarios present in a run."""
    pooled: Dict[str, Dict[str, List[float]]] = {}
    for group, metrics in scenarios.items():
        for key, value in metrics.items():
            pooled.setdefault(scenario_of(group), {}).setdefault(key, []).append(value)
    out = {}
    for scenario, metrics in OPEN_SCENARIOS.items():
        if scenario in pooled:
            out[scenario] = {m.label: _mean(pooled[scenario].get(m.key)) for m in metrics}
    return out


def raw_score(per_scenario: Dict[str, Dict[str, Optional[float]]]) -> Dict[str, float]:
    """Per-scenario mean of its challenge metrics (a missing one counts 0) and their geometric mean."""
    scores = {s: mean(v if v is not None else 0.0 for v in ms.values()) for s, ms in per_scenario.items()}
    if scores:
        scores["raw_score"] = geometric_mean([max(v, EPS) for v in scores.values()])
    return scores


def _mean(values: Optional[List[float]]) -> Optional[float]:
    return mean(values) if values else None
