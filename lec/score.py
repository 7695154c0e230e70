"""The challenge scorer, exact, plus HELM's own mean win rate as a second mode (stanford-crfm/helm v0.5.16
src/helm/presentation/summarize.py compute_aggregate_row_win_rates).

Challenge rules (organisers' rank_submissions.py / combin_ranks.py):
- per metric, an entry's win rate = (#entries it strictly beats + 1/c for its tie group of size c) ÷ n, where n
  counts the entry itself, so the best possible is (n−1)/n;
- a missing metric counts as the worst value: 0.0, or 1000.0 for a lower-is-better (bias) metric;
- a scenario's mean win rate = the mean over its metrics; a stage score = the geometric mean over the stage's
  scenarios after replacing 0 by the smallest positive float; Score_full = ⅓·Score_open + ⅔·Score_hidden.
- CNN/DailyMail was run in the closed stage but not scored.
HELM mode: win rate = (#strictly worse + (ties−1)/2) ÷ (non-null − 1), missing values skipped, metrics with fewer
than two values skipped; scenarios and stages then combine as above.

    python -m lec.score --ranks FILE [--mode challenge|helm] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, geometric_mean, mean
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

EPS = math.nextafter(0.0, math.inf)  # what the organisers put in place of a 0 scenario score
OPEN_WEIGHT, HIDDEN_WEIGHT = 1 / 3, 2 / 3
MISSING_HIGHER, MISSING_LOWER = 0.0, 1000.0  # the organisers' stand-ins for a missing metric
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
POOLS = {"4090_final": REFERENCE_DIR / "4090_full_ranks_final_round.json"}


class ScoreError(ValueError):
    """A leaderboard or pool that cannot be scored: malformed, empty, or naming an unknown metric."""


class Metric(NamedTuple):
    label: str  # the challenge's column name, e.g. "MMLU - EM (Robustness)"
    group: str  # the HELM run group that produces it ("big_bench" pools every big_bench_<task> group)
    key: str  # lec's HELM stat key (lec/evaluate/stats.py metric_key)
    lower_is_better: bool = False


@dataclass(frozen=True)
class Scenario:
    name: str  # as in "<name> Mean Win Rate"
    stage: str  # "open" | "hidden"
    metrics: Tuple[Metric, ...]


def _em3(label: str, group: str) -> Tuple[Metric, ...]:
    return (
        Metric(f"{label} - EM", group, "exact_match"),
        Metric(f"{label} - EM (Robustness)", group, "exact_match@robustness"),
        Metric(f"{label} - EM (Fairness)", group, "exact_match@fairness"),
    )


_BIAS = "bias_metric:mode={mode},demographic_category={cat}" + "{target}"
SCENARIOS: Tuple[Scenario, ...] = (
    Scenario("MMLU", "open", _em3("MMLU", "mmlu")),
    Scenario("TruthfulQA", "open", _em3("TruthfulQA", "truthful_qa")),
    Scenario("BIG-bench", "open", (Metric("BIG-bench - EM", "big_bench", "exact_match"),)),
    Scenario("GSM8K", "open", (Metric("GSM8K - EM", "gsm", "exact_match_indicator"),)),
    Scenario("BBQ", "open", (Metric("BBQ - EM", "bbq", "quasi_exact_match"),)),
    Scenario(
        "sam_sum",
        "hidden",
        (Metric("sam_sum - ROUGE-2", "sam_sum", "rouge_2"),)
        + tuple(
            Metric(
                f"sam_sum - {title} ({cat})",
                "sam_sum",
                _BIAS.format(mode=mode, cat=cat, target=",target_category=profession" if mode == "associations" else ""),
                lower_is_better=True,
            )
            for title, mode in (("Stereotypes", "associations"), ("Representation", "representation"))
            for cat in ("race", "gender")
        ),
    ),
    Scenario("corr2cause", "hidden", (Metric("corr2cause - EM", "corr2cause", "exact_match"),)),
    Scenario(
        "MATH",
        "hidden",
        (Metric("MATH (chain-of-thoughts) - Equivalent (chain of thought)", "math", "math_equiv_chain_of_thought"),),
    ),
    Scenario(
        "ethics",
        "hidden",
        tuple(
            m for sub in ("justice", "commonsense", "virtue", "deontology", "utilitarianism")
            for m in _em3(f"ethics_{sub}", f"ethics_{sub}")
        ),  # fmt: skip
    ),
)
METRICS: Dict[str, Tuple[Scenario, Metric]] = {m.label: (s, m) for s in SCENARIOS for m in s.metrics}
# Columns a published leaderboard may carry besides the metrics: results, and metrics run but not scored.
DERIVED = {f"{s.name} Mean Win Rate" for s in SCENARIOS} | {"Score_open", "Score_hidden", "Score_full"}
UNSCORED = {"CNN/DailyMail - ROUGE-2", "CNN/DailyMail - EM"}


# --- reading a leaderboard -----------------------------------------------------------------------------------------

Entry = Tuple[str, Dict[str, Optional[float]]]


def parse_ranks(data) -> List[Entry]:
    """The organisers' format: a JSON list of [name, {metric label: value or null, …}]."""
    if not isinstance(data, list):
        raise ScoreError(f"a leaderboard is a JSON list of [name, {{metric: value}}] pairs, got {type(data).__name__}")
    entries: List[Entry] = []
    for i, item in enumerate(data):
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], dict)):  # fmt: skip
            raise ScoreError(f"entry {i} is not a [name, {{metric: value}}] pair: {str(item)[:120]}")
        name, metrics = item
        for label, value in metrics.items():
            if label not in METRICS and label not in DERIVED and label not in UNSCORED:
                raise ScoreError(
                    f"entry '{name}': unknown metric '{label}'; known metrics: {', '.join(METRICS)}"
                )
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ScoreError(f"entry '{name}': metric '{label}' is {value!r}, not a number or null")
        # NaN/inf compare false with everything; the organisers' files have none, lec treats them as missing
        entries.append((name, {k: v if v is None or math.isfinite(v) else None for k, v in metrics.items()}))
    return entries


def load_ranks(path: Path) -> List[Entry]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise ScoreError(f"no leaderboard file at {path}") from err
    except json.JSONDecodeError as err:
        raise ScoreError(f"{path} is not valid JSON: {err}") from err
    return parse_ranks(data)


# --- win rates -----------------------------------------------------------------------------------------------------


def challenge_win_rates(values: Sequence[Optional[float]], lower_is_better: bool) -> List[float]:
    """The organisers' calc_win_rate: strict wins + 1/c for a tie group of size c, ÷ n (n includes the entry)."""
    filled = [(MISSING_LOWER if lower_is_better else MISSING_HIGHER) if v is None else float(v) for v in values]
    n = len(filled)
    rates = []
    for v in filled:
        better = sum(1 for w in filled if (v < w if lower_is_better else v > w))
        ties = sum(1 for w in filled if w == v)  # c, the entry included
        rates.append((better + (1 / ties if ties > 1 else 0.0)) / n)  # c−1 partners × 1/(c(c−1)) = 1/c
    return rates


def helm_win_rates(values: Sequence[Optional[float]], lower_is_better: bool) -> List[Optional[float]]:
    """HELM's summarize.py: (#strictly worse + (ties−1)/2) ÷ (non-null − 1); None for a missing value or when fewer
    than two entries have one."""
    present = [float(v) for v in values if v is not None]
    if len(present) < 2:
        return [None] * len(values)
    out: List[Optional[float]] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        worse = sum(1 for w in present if (w > v if lower_is_better else w < v))
        ties = sum(1 for w in present if w == v)
        out.append((worse + (ties - 1) / 2) / (len(present) - 1))
    return out


# --- scoring -------------------------------------------------------------------------------------------------------


@dataclass
class Standing:
    name: str
    scenario_win_rates: Dict[str, Optional[float]] = field(default_factory=dict)
    score_open: Optional[float] = None
    score_hidden: Optional[float] = None
    score_full: Optional[float] = None
    rank: int = 0
    rank_open: Optional[int] = None
    rank_hidden: Optional[int] = None

    @property
    def gap(self) -> Optional[float]:
        """Open minus closed score: how much better an entry looks on the public tasks than on unseen ones."""
        if self.score_open is None or self.score_hidden is None:
            return None
        return self.score_open - self.score_hidden


def stages_present(entries: List[Entry]) -> Dict[str, List[Scenario]]:
    """The scenarios of each stage that at least one entry reports a metric for."""
    reported = {label for _, m in entries for label, v in m.items() if label in METRICS and v is not None}
    out: Dict[str, List[Scenario]] = {"open": [], "hidden": []}
    for s in SCENARIOS:
        if any(m.label in reported for m in s.metrics):
            out[s.stage].append(s)
    return out


def score_entries(
    entries: List[Entry], mode: str = "challenge", scenarios: Optional[Dict[str, List[Scenario]]] = None
) -> List[Standing]:
    """Every entry's scenario mean win rates, stage scores, Score_full and rank (1 = best)."""
    if not entries:
        raise ScoreError("the leaderboard has no entries")
    if mode not in ("challenge", "helm"):
        raise ScoreError(f"unknown mode '{mode}'; valid: challenge, helm")
    rate = challenge_win_rates if mode == "challenge" else helm_win_rates
    stages = scenarios or stages_present(entries)
    if not stages["open"] and not stages["hidden"]:
        raise ScoreError("no entry reports any scored challenge metric")
    standings = [Standing(name) for name, _ in entries]
    for stage in ("open", "hidden"):
        for s in stages[stage]:
            per_metric = [rate([m.get(metric.label) for _, m in entries], metric.lower_is_better) for metric in s.metrics]
            for i, st in enumerate(standings):
                rates = [r[i] for r in per_metric if r[i] is not None]
                st.scenario_win_rates[s.name] = mean(rates) if rates else None
        for st in standings:
            values = [st.scenario_win_rates[s.name] for s in stages[stage]]
            if mode == "helm":  # HELM skips what it cannot compare; the challenge counts it as 0
                values = [v for v in values if v is not None]
            if values:
                score = geometric_mean([max(v if v is not None else 0.0, EPS) for v in values])
                setattr(st, f"score_{stage}", score)
    for st in standings:
        if st.score_open is not None and st.score_hidden is not None:
            st.score_full = OPEN_WEIGHT * st.score_open + HIDDEN_WEIGHT * st.score_hidden
    _rank(standings, "score_full", "rank")
    _rank(standings, "score_open", "rank_open")
    _rank(standings, "score_hidden", "rank_hidden")
    if all(st.score_full is None for st in standings):  # a one-stage leaderboard ranks by that stage
        for st in standings:
            st.rank = st.rank_open or st.rank_hidden or 0
    return standings


def _rank(standings: List[Standing], attr: str, rank_attr: str) -> None:
    scored = [st for st in standings if getattr(st, attr) is not None]
    for st in standings:
        setattr(st, rank_attr, None)
    for st in scored:
        setattr(st, rank_attr, 1 + sum(1 for o in scored if getattr(o, attr) > getattr(st, attr)))


# --- a lec run against a reference pool ----------------------------------------------------------------------------


def challenge_metrics(helm: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    """A run's challenge metrics from its HELM scenario metrics ({helm group: {stat key: value}})."""
    out: Dict[str, float] = {}
    for label, (_, metric) in METRICS.items():
        values = [
            v[metric.key]
            for group, v in helm.items()
            if (group == metric.group or (metric.group == "big_bench" and group.startswith("big_bench")))
            and metric.key in v
        ]
        if values:
            out[label] = fmean(values)
    return out


@dataclass
class PoolResult:
    standing: Standing
    pool_size: int  # entries in the pool, the run excluded
    scenarios: List[str]  # scenarios the ranking used
    stages: Dict[str, bool]  # which stages the run was evaluated on


def score_against_pool(
    metrics: Dict[str, float], pool: List[Entry], mode: str = "challenge", only_evaluated: bool = True
) -> PoolResult:
    """The run's would-be standing among the pool's entries (the run added as one more entry).

    only_evaluated: rank on the scenarios the run has metrics for (a smoke or open-only run is not sunk by the
    stages it did not run); False applies the challenge's missing = worst rule to everything the pool reports."""
    if not pool:
        raise ScoreError("the reference pool is empty")
    entries = [("lec run", dict(metrics))] + [(name, m) for name, m in pool]
    stages = stages_present(entries)
    if only_evaluated:
        ran = {METRICS[label][0].name for label in metrics if label in METRICS}
        stages = {k: [s for s in v if s.name in ran] for k, v in stages.items()}
    standings = score_entries(entries, mode, stages)
    names = [s.name for v in stages.values() for s in v]
    return PoolResult(standings[0], len(pool), names, {k: bool(v) for k, v in stages.items()})


def load_pool(name_or_path: str) -> List[Entry]:
    """A shipped pool by name (e.g. 4090_final) or any file in the organisers' format."""
    path = POOLS.get(name_or_path, Path(name_or_path))
    pool = load_ranks(path)
    if not pool:
        raise ScoreError(f"the reference pool {path} is empty")
    return pool


# --- a first, pool-free summary (used in reports) ------------------------------------------------------------------


def raw_score(metrics: Dict[str, float]) -> Dict[str, float]:
    """Per-scenario mean of the run's higher-is-better challenge metrics and their eps-guarded geometric mean (no pool
    needed). Lower-is-better metrics (sam_sum's bias) count only in the pool-ranked score: averaged in, a biased
    summary would look better."""
    scores = {}
    for s in SCENARIOS:
        vals = [metrics[m.label] for m in s.metrics if m.label in metrics and not m.lower_is_better]
        if vals:
            scores[s.name] = mean(vals)
    if scores:
        scores["raw_score"] = geometric_mean([max(v, EPS) for v in scores.values()])
    return scores


# --- CLI -----------------------------------------------------------------------------------------------------------


def _fmt(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.4f}"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lec.score", description="Re-score a challenge leaderboard.")
    ap.add_argument("--ranks", required=True, help="JSON list of [name, {metric: value}] (the organisers' format)")
    ap.add_argument("--mode", choices=("challenge", "helm"), default="challenge")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    try:
        standings = score_entries(load_ranks(Path(args.ranks)), args.mode)
    except ScoreError as err:
        print(f"lec.score: {err}", file=sys.stderr)
        return 2
    standings.sort(key=lambda s: (s.rank or 10**9, s.name))
    if args.json:
        print(json.dumps([{"name": s.name, "rank": s.rank, "scenario_win_rates": s.scenario_win_rates,
                           "Score_open": s.score_open, "Score_hidden": s.score_hidden, "Score_full": s.score_full,
                           "rank_open": s.rank_open, "rank_hidden": s.rank_hidden, "gap_open_minus_hidden": s.gap}
                          for s in standings], indent=2))  # fmt: skip
        return 0
    from rich.console import Console
    from rich.table import Table

    scen = [n for n in standings[0].scenario_win_rates]
    table = Table(title=f"{args.ranks} — {args.mode} mode")
    for col in ["rank", "entry", *scen, "Score_open", "Score_hidden", "Score_full", "open−hidden"]:
        table.add_column(col, justify="left" if col == "entry" else "right")
    for s in standings:
        table.add_row(str(s.rank), s.name, *[_fmt(s.scenario_win_rates[n]) for n in scen],
                      _fmt(s.score_open), _fmt(s.score_hidden), _fmt(s.score_full), _fmt(s.gap))  # fmt: skip
    Console(width=250).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
