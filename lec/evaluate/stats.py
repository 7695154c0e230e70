"""Parse HELM's per-run `stats.json` into scenario metrics, aggregated the way helm-summarize does.

A run's stats.json holds trial means; a scenario value such as "MMLU - EM" is the unweighted mean over that
scenario's runs (subjects, tasks × shots) — stanford-crfm/helm v0.5.16 src/helm/presentation/summarize.py
(create_cell). lec does not parse `groups/*.json`: its schema differs between HELM versions (0.5.x names BIG-bench
groups big_bench_<task>, the challenge's fork BIG-bench).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Dict, List, Optional

EVAL_SPLITS = ("test", "valid")  # the split a scenario is scored on: test where it has one, else valid


@dataclass
class RunStats:
    run_name: str
    model: str  # HELM model name, e.g. lec/tuned
    scenario: str  # HELM scenario group, e.g. mmlu, gsm
    metrics: Dict[str, float]  # "exact_match", "exact_match@robustness", "exact_match@fairness", …


def metric_key(stat_name: dict) -> Optional[str]:
    """'exact_match' for plain stats, 'exact_match@robustness' for the worst-case perturbation variants."""
    pert = stat_name.get("perturbation")
    if pert is None:
        return stat_name["name"]
    if pert.get("computed_on") == "worst":
        return f"{stat_name['name']}@{pert['name']}"
    return None  # per-perturbation stats (e.g. "typo" only) are not scored


def read_run(run_dir: Path) -> Optional[RunStats]:
    """One run's stats on its eval split, or None if the run did not finish (no stats.json)."""
    stats_path, spec_path = run_dir / "stats.json", run_dir / "run_spec.json"
    if not stats_path.exists() or not spec_path.exists():
        return None
    try:
        spec = json.loads(spec_path.read_text())
        stats = json.loads(stats_path.read_text())
    except json.JSONDecodeError:  # half-written when helm-run was stopped at the budget
        return None
    splits = {s["name"].get("split") for s in stats}
    split = next((s for s in EVAL_SPLITS if s in splits), None)
    metrics = {}
    for s in stats:
        key = metric_key(s["name"])
        if key is not None and s["name"].get("split") == split and s.get("count", 0) > 0:
            metrics[key] = float(s["mean"])
    groups = spec.get("groups") or [spec["name"].split(":")[0]]
    return RunStats(spec["name"], spec["adapter_spec"]["model"], groups[0], metrics)


def read_suite(helm_output: Path, suite: str) -> List[RunStats]:
    runs_dir = helm_output / "runs" / suite
    out = []
    for d in sorted(runs_dir.iterdir()) if runs_dir.exists() else []:
        if d.is_dir() and d.name not in ("eval_cache", "groups"):
            r = read_run(d)
            if r is not None:
                out.append(r)
    return out


def scenario_metrics(runs: List[RunStats]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{model: {scenario: {metric: mean over the scenario's runs}}}."""
    acc: Dict[str, Dict[str, Dict[str, List[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in runs:
        for k, v in r.metrics.items():
            acc[r.model][r.scenario][k].append(v)
    return {m: {s: {k: mean(v) for k, v in ks.items()} for s, ks in ss.items()} for m, ss in acc.items()}
