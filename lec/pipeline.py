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
    # {label: {scenario: {challenge metric: value}}} and {label: {scenario|raw_score: value}}
    challenge: Dict[str, Dict[str, Dict[str, Optional[float]]]] = field(default_factory=dict)
    scores: Dict[str, Dict[str, float]] = field(default_factory=dict)
    eval_timed_out: bool = False

    @property
    def objective(self) -> float:
        return self.scores.get("tuned", {}).get("raw_score", float("nan"))


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
            for label, scenarios in ev.metrics.items():
                prefix = "" if label == "tuned" else f"{label}/"
                summary.challenge[label] = score.challenge_metrics(scenarios)
                summary.scores[label] = score.raw_score(summary.challenge[label])
                track.log_metrics({f"{prefix}challenge/{track.metric_name(k)}": v for k, v in summary.scores[label].items()})
                for scenario, metrics in summary.challenge[label].items():
                    track.log_metrics({f"{prefix}challenge/{track.metric_name(scenario, m)}": v for m, v in metrics.items()})

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
    return {"run_dir": str(s.run_dir), "run_id": s.run_id, "timings": s.timings, "train": s.train,
            "challenge": s.challenge, "scores": s.scores, "eval_timed_out": s.eval_timed_out}  # fmt: skip
