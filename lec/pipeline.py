"""One lec run, top to bottom: curate → finetune → evaluate (real HELM) → score → MLflow."""

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
from lec import score, track
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
    from lec.data.mixture import build_mixture
    from lec.evaluate.run import evaluate
    from lec.models import materialize_base
    from lec.train import finetune

    run_dir.mkdir(parents=True, exist_ok=True)
    params = run_dir / "config.yaml"
    params.write_text(yaml.safe_dump(lec_config.to_container(cfg), sort_keys=False))
    t: Dict[str, float] = {}
    tags = {"lec.run_dir": str(run_dir), "lec.helm_version": _version("crfm-helm")}
    with track.run(cfg, run_name, tags) as active:
        summary = RunSummary(run_dir, active.info.run_id, t)
        track.log_config(cfg, choices)

        with stage("curate", t):
            mixture = build_mixture(cfg.data, run_dir / "data")
            report = mixture.report()
            track.log_metrics({"curation/n_train": mixture.n_train, "curation/n_val": mixture.n_val})
            for s in mixture.sources:
                prefix = f"curation/{track.metric_name(s.name)}"
                track.log_metrics({f"{prefix}/rows_in": s.rows_in, f"{prefix}/rows_out": s.rows_out,
                                   f"{prefix}/bad": sum(s.bad.values()), f"{prefix}/filtered": s.filtered})  # fmt: skip
            mlflow.log_dict(report, "curation/curation_report.json")

        with stage("finetune", t):
            base_dir = materialize_base(cfg.model, Path(cfg.outputs_dir).resolve() / "cache")
            result = finetune(cfg, mixture.train_path, base_dir, run_dir / "adapter", on_metrics=track.log_metrics)
            summary.train = {"steps": result.steps, "loss": result.train_loss, "seconds": result.seconds,
                             "tokens_per_s": result.tokens / max(result.seconds, 1e-9),
                             "trainable_params": result.trainable_params}  # fmt: skip
            track.log_metrics({f"train/final_{k}": v for k, v in summary.train.items()})
            mlflow.log_artifacts(str(result.adapter_dir), "adapter")

        with stage("evaluate", t):
            ev = evaluate(cfg, run_dir, params, result.adapter_dir, base_dir)
            summary.eval_timed_out = ev.timed_out
            mlflow.set_tags({"lec.eval_suite": ev.suite, "lec.eval_timed_out": str(ev.timed_out)})
            for label, scenarios in ev.metrics.items():
                prefix = "" if label == "tuned" else f"{label}/"
                for scenario, metrics in scenarios.items():
                    track.log_metrics({f"{prefix}helm/{track.metric_name(scenario, k)}": v for k, v in metrics.items()})
            track.log_metrics({"eval/seconds": ev.seconds, "eval/runs_finished": ev.runs_finished})
            _log_helm_artifacts(ev.helm_output, ev.suite)

        with stage("score", t):
            pool = score.load_pool(cfg.score.pool)
            for label, scenarios in ev.metrics.items():
                prefix = "" if label == "tuned" else f"{label}/"
                metrics = score.challenge_metrics(scenarios)
                summary.challenge[label], summary.scores[label] = metrics, score.raw_score(metrics)
                try:
                    ranked = score.score_against_pool(metrics, pool, cfg.score.mode, cfg.score.only_evaluated)
                except score.ScoreError as err:  # e.g. the eval budget ran out before any scored run finished
                    log.warning("%s: not ranked against the pool: %s", label, err)
                    mlflow.set_tag(f"lec.{label}.unranked", str(err))
                    continue
                summary.standing[label] = ranked
                track.log_metrics({f"{prefix}challenge/{track.metric_name(k)}": v for k, v in metrics.items()})
                track.log_metrics({f"{prefix}challenge/mean/{track.metric_name(k)}": v
                                   for k, v in summary.scores[label].items()})  # fmt: skip
                st = ranked.standing
                track.log_metrics({f"{prefix}challenge/{k}": v for k, v in {
                    "score_open": st.score_open, "score_hidden": st.score_hidden, "score_full": st.score_full,
                    "rank": st.rank, "rank_open": st.rank_open, "rank_hidden": st.rank_hidden,
                    "gap_open_minus_hidden": st.gap}.items()})  # fmt: skip
            mlflow.set_tags({"lec.score_pool": cfg.score.pool, "lec.score_mode": cfg.score.mode,
                             "lec.score_pool_size": str(len(pool)),
                             "lec.score_scenarios": ",".join(next(iter(summary.standing.values())).scenarios
                                                             if summary.standing else [])})  # fmt: skip

        track.log_metrics({f"timing/{k}_s": v for k, v in t.items()})
        (run_dir / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2))
        mlflow.log_artifact(str(run_dir / "summary.json"))
    return summary


def _log_helm_artifacts(helm_output: Path, suite: str) -> None:
    """Per-run run_spec/stats/per_instance_stats plus the helm-run log; not HELM's whole output tree."""
    runs = helm_output / "runs" / suite
    for run_dir in sorted(runs.iterdir()) if runs.exists() else []:
        if run_dir.is_dir() and (run_dir / "stats.json").exists():
            name = track.metric_name(run_dir.name.replace(":", "_").replace(",", "_").replace("=", "-"))
            for f in ("run_spec.json", "stats.json", "per_instance_stats.json"):
                if (run_dir / f).exists():
                    mlflow.log_artifact(str(run_dir / f), f"helm/{name}")
    for f in helm_output.glob("helm-*.log"):
        mlflow.log_artifact(str(f), "helm")


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
