"""One lec run, top to bottom: curate → finetune → evaluate (real HELM) → score → MLflow.

Each stage is a function in lec/stages.py that reads and writes the run dir; dvc.yaml runs the same functions one
process per stage (`python -m lec.stages <stage>`)."""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Optional

import mlflow
import yaml

from lec import config as lec_config
from lec import score, stages, track
from lec.config import LecConfig

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    run_dir: Path
    run_id: str
    timings: Dict[str, float] = field(default_factory=dict)
    train: Optional[dict] = None
    challenge: Dict[str, Dict[str, float]] = field(default_factory=dict)  # {label: {challenge metric: value}}
    scores: Dict[str, Dict[str, float]] = field(default_factory=dict)  # {label: {scenario | raw_score: mean}}
    standing: Dict[str, score.PoolResult] = field(default_factory=dict)  # {label: rank among the pool}
    eval_timed_out: bool = False

    @property
    def objective(self) -> float:
        """What a sweep optimises: the tuned model's Score_full against the pool, else its stage score."""
        if "tuned" not in self.standing:
            return float("nan")
        st = self.standing["tuned"].standing
        value = next((v for v in (st.score_full, st.score_open, st.score_hidden) if v is not None), None)
        return float("nan") if value is None else value


@contextmanager
def stage(name: str, timings: Dict[str, float]) -> Iterator[None]:
    log.info("── %s", name)
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start
    log.info("── %s done in %.1f s", name, timings[name])


def run(cfg: LecConfig, run_dir: Path, run_name: str, choices: Optional[Dict[str, str]] = None) -> RunSummary:
    if cfg.train.enabled and cfg.train.preflight:
        from lec.preflight import check

        check(cfg)  # memory pre-flight before any heavy work: refuses a run that will not fit, naming the knobs
    run_dir.mkdir(parents=True, exist_ok=True)
    params = run_dir / "config.yaml"
    params.write_text(yaml.safe_dump(lec_config.to_container(cfg), sort_keys=False))
    t: Dict[str, float] = {}
    tags = {"lec.run_dir": str(run_dir), "lec.helm_version": _version("crfm-helm")}
    with track.run(cfg, run_name, tags) as active:
        summary = RunSummary(run_dir, active.info.run_id, t)
        track.log_config(cfg, choices)

        with stage("curate", t):
            stages.curate(cfg, run_dir)  # → run_dir/data/{train,val}.jsonl + curation report, curation/… metrics

        with stage("finetune", t):
            summary.train = stages.finetune(cfg, run_dir)  # → run_dir/adapter, train/… metrics

        with stage("evaluate", t):
            ev = stages.evaluate(cfg, run_dir)  # → run_dir/helm, helm/… metrics
            summary.eval_timed_out = ev.timed_out

        with stage("score", t):
            scored = stages.score(cfg, run_dir, ev.metrics)  # → challenge/… metrics
            summary.challenge, summary.scores, summary.standing = scored.challenge, scored.scores, scored.standing

        track.log_metrics({f"timing/{k}_s": v for k, v in t.items()})
        (run_dir / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2))
        mlflow.log_artifact(str(run_dir / "summary.json"))
    return summary


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def _jsonable(s: RunSummary) -> dict:
    standing = {
        label: {"rank": r.standing.rank, "of": r.pool_size + 1, "scenarios": r.scenarios,
                "scenario_win_rates": r.standing.scenario_win_rates, "score_open": r.standing.score_open,
                "score_hidden": r.standing.score_hidden, "score_full": r.standing.score_full,
                "rank_open": r.standing.rank_open, "rank_hidden": r.standing.rank_hidden, "gap": r.standing.gap}
        for label, r in s.standing.items()
    }  # fmt: skip
    return {"run_dir": str(s.run_dir), "run_id": s.run_id, "timings": s.timings, "train": s.train,
            "challenge": s.challenge, "scores": s.scores, "standing": standing,
            "eval_timed_out": s.eval_timed_out}  # fmt: skip
