"""The four stages of a run, each a function of (typed config, pipeline dir) that reads its inputs from and writes
its outputs to that dir, and logs to the active MLflow run:

    curate    → <dir>/data/{train,val}.jsonl, data/curation_report.json, curation.json (metrics)
    finetune  → <dir>/adapter/, train_log.jsonl, train_loss.csv (plot), train.json (metrics)
    evaluate  → <dir>/helm/, eval_metrics.json (metrics), scenario_scores.csv (plot)
    score     → <dir>/score.json (metrics)

`pipeline.run` calls them in order inside one MLflow run. dvc.yaml calls them one per process:

    python -m lec.stages <curate|finetune|evaluate|score> [--params params.yaml] [--dir outputs/pipeline]

params.yaml is written by DVC only: `dvc exp run [-S key=value …]` composes it from conf/ (.dvc/config hydra.*).

A stage process reads params.yaml, validates it with the same schema (lec.config.load), runs the stage inside its
own MLflow run named `<DVC experiment>/<stage>` and tagged lec.dvc.exp_name (DVC_EXP_NAME; "workspace" under plain
`dvc repro`), lec.dvc.stage and lec.dvc.baseline_rev. A DVC run-cache hit runs nothing, so it logs nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from lec import config as lec_config
from lec.config import AdapterKind, LecConfig

log = logging.getLogger("lec.stages")
STAGES = ("curate", "finetune", "evaluate", "score")
PIPELINE_DIR = Path("outputs/pipeline")


def _base_dir(cfg: LecConfig) -> Optional[Path]:
    from lec.models import materialize_base

    return materialize_base(cfg.model, Path(cfg.outputs_dir).resolve() / "cache")  # never a DVC output


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False))


# --- curate -------------------------------------------------------------------------------------------------------


def curate(cfg: LecConfig, out: Path):
    import mlflow

    from lec import track
    from lec.data.curate import curate as build

    mixture = build(cfg, out / "data", _base_dir(cfg))  # curate decides whether it needs the tokenizer
    metrics = {"curation/n_train": mixture.n_train, "curation/n_val": mixture.n_val}
    for s in mixture.sources:
        prefix = f"curation/{track.metric_name(s.name)}"
        dropped = sum(st.dropped_by_source.get(s.name, 0) for st in mixture.steps)
        metrics.update({f"{prefix}/rows_in": s.rows_in, f"{prefix}/rows_out": s.rows_out,
                        f"{prefix}/bad": sum(s.bad.values()), f"{prefix}/filtered": s.filtered,
                        f"{prefix}/llm_generated": s.llm_generated, f"{prefix}/curation_dropped": dropped})  # fmt: skip
    for st in mixture.steps:
        if st.enabled:
            metrics[f"curation/step/{st.step}/dropped"] = st.rows_in - st.rows_out
            metrics[f"curation/step/{st.step}/seconds"] = st.seconds
    metrics["curation/decontam/instances"] = mixture.decontam.get("instances", 0)
    track.log_metrics(metrics)
    mlflow.set_tag("lec.decontam", mixture.decontam.get("note", "")[:5000])
    mlflow.log_dict(mixture.report(), "curation/curation_report.json")
    _write_json(out / "curation.json", metrics)
    return mixture


# --- finetune -----------------------------------------------------------------------------------------------------


def finetune(cfg: LecConfig, out: Path) -> Dict[str, float]:
    import mlflow

    from lec import track
    from lec.train import finetune as train

    result = train(cfg, out / "data" / "train.jsonl", _base_dir(cfg), out / "adapter", on_metrics=track.log_metrics)
    summary = {"steps": result.steps, "loss": result.train_loss, "seconds": result.seconds,
               "tokens_per_s": result.tokens / max(result.seconds, 1e-9),
               "trainable_params": result.trainable_params}  # fmt: skip
    track.log_metrics({f"train/final_{k}": v for k, v in summary.items()})
    _log_weights(cfg, result.adapter_dir)
    _loss_csv(Path(result.log_path), out / "train_loss.csv")
    _write_json(out / "train.json", summary)
    return summary


def _log_weights(cfg: LecConfig, weights: Path) -> None:
    """A LoRA adapter (MBs) goes to MLflow whole; a full fine-tune (14 GB for a 7B in bf16) stays on disk, and MLflow
    gets its config/tokenizer files and the path (tag lec.weights_dir)."""
    import mlflow

    mlflow.set_tag("lec.weights_dir", str(weights.resolve()))
    if cfg.adapter.kind is not AdapterKind.full:
        mlflow.log_artifacts(str(weights), "adapter")
        return
    for f in sorted(weights.iterdir()):
        if f.is_file() and f.suffix not in (".safetensors", ".bin", ".pt", ".pth"):
            mlflow.log_artifact(str(f), "adapter")


def _loss_csv(log_path: Path, csv_path: Path) -> None:
    """train_log.jsonl → step,loss CSV (the loss-curve plot in dvc.yaml)."""
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()] if log_path.exists() else []
    with csv_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss"])
        w.writerows([r["step"], r["train/loss"]] for r in rows if "train/loss" in r)


# --- evaluate -----------------------------------------------------------------------------------------------------


def evaluate(cfg: LecConfig, out: Path):
    import mlflow

    from lec import track
    from lec.evaluate.run import evaluate as run_helm

    params = out / "config.yaml"  # the server processes load the run's config from here
    params.write_text(yaml.safe_dump(lec_config.to_container(cfg), sort_keys=False))
    adapter = out / "adapter"
    ev = run_helm(cfg, out, params, adapter if adapter.exists() else None, _base_dir(cfg))
    mlflow.set_tags({"lec.eval_suite": ev.suite, "lec.eval_timed_out": str(ev.timed_out)})
    if ev.timed_out:  # say so where people look: the run's tags and a metric per model
        mlflow.set_tag("lec.eval_budget_overrun", f"helm-run stopped at the {cfg.eval.budget_min:g} min budget; "
                       f"unanswered scenarios scored 0: {ev.unanswered}")  # fmt: skip
        track.log_metrics({f"{'' if label == 'tuned' else label + '/'}eval/unanswered_scenarios": len(groups)
                           for label, groups in ev.unanswered.items()})  # fmt: skip
    for label, scenarios in ev.metrics.items():
        prefix = "" if label == "tuned" else f"{label}/"
        for scenario, metrics in scenarios.items():
            track.log_metrics({f"{prefix}helm/{track.metric_name(scenario, k)}": v for k, v in metrics.items()})
    track.log_metrics({"eval/seconds": ev.seconds, "eval/runs_finished": ev.runs_finished})
    _log_helm_artifacts(ev.helm_output, ev.suite)
    _write_json(out / "eval_metrics.json", {"metrics": ev.metrics, "seconds": ev.seconds,
                                           "timed_out": ev.timed_out, "runs_finished": ev.runs_finished})  # fmt: skip
    with (out / "scenario_scores.csv").open("w", newline="") as f:  # the per-scenario plot in dvc.yaml
        w = csv.writer(f)
        w.writerow(["model_scenario_metric", "value"])
        w.writerows([f"{label}|{sc}|{k}", v] for label, scs in ev.metrics.items()
                    for sc, ms in scs.items() for k, v in ms.items())  # fmt: skip
    return ev


def _log_helm_artifacts(helm_output: Path, suite: str) -> None:
    """Per-run run_spec/stats/per_instance_stats plus the helm-run log; not HELM's whole output tree."""
    import mlflow

    from lec import track

    runs = helm_output / "runs" / suite
    for run_dir in sorted(runs.iterdir()) if runs.exists() else []:
        if run_dir.is_dir() and (run_dir / "stats.json").exists():
            name = track.metric_name(run_dir.name.replace(":", "_").replace(",", "_").replace("=", "-"))
            for f in ("run_spec.json", "stats.json", "per_instance_stats.json"):
                if (run_dir / f).exists():
                    mlflow.log_artifact(str(run_dir / f), f"helm/{name}")
    for f in helm_output.glob("helm-*.log"):
        mlflow.log_artifact(str(f), "helm")


# --- score --------------------------------------------------------------------------------------------------------


@dataclass
class Scored:
    challenge: Dict[str, Dict[str, float]] = field(default_factory=dict)
    scores: Dict[str, Dict[str, float]] = field(default_factory=dict)
    standing: Dict[str, object] = field(default_factory=dict)  # {label: score.PoolResult}
    scenarios: List[str] = field(default_factory=list)


def score(cfg: LecConfig, out: Path, metrics_by_label: Optional[Dict[str, Dict[str, Dict[str, float]]]] = None) -> Scored:
    import mlflow

    from lec import score as scorer
    from lec import track

    if metrics_by_label is None:
        metrics_by_label = json.loads((out / "eval_metrics.json").read_text())["metrics"]
    pool = scorer.load_pool(cfg.score.pool)
    result = Scored()
    for label, scenarios in metrics_by_label.items():
        prefix = "" if label == "tuned" else f"{label}/"
        metrics = scorer.challenge_metrics(scenarios)
        result.challenge[label], result.scores[label] = metrics, scorer.raw_score(metrics)
        try:
            ranked = scorer.score_against_pool(metrics, pool, cfg.score.mode, cfg.score.only_evaluated)
        except scorer.ScoreError as err:  # e.g. the eval budget ran out before any scored run finished
            log.warning("%s: not ranked against the pool: %s", label, err)
            mlflow.set_tag(f"lec.{label}.unranked", str(err))
            continue
        result.standing[label] = ranked
        result.scenarios = ranked.scenarios
        track.log_metrics({f"{prefix}challenge/{track.metric_name(k)}": v for k, v in metrics.items()})
        track.log_metrics({f"{prefix}challenge/mean/{track.metric_name(k)}": v
                           for k, v in result.scores[label].items()})  # fmt: skip
        st = ranked.standing
        track.log_metrics({f"{prefix}challenge/{k}": v for k, v in {
            "score_open": st.score_open, "score_hidden": st.score_hidden, "score_full": st.score_full,
            "rank": st.rank, "rank_open": st.rank_open, "rank_hidden": st.rank_hidden,
            "gap_open_minus_hidden": st.gap}.items()})  # fmt: skip
    mlflow.set_tags({"lec.score_pool": cfg.score.pool, "lec.score_mode": cfg.score.mode,
                     "lec.score_pool_size": str(len(pool)), "lec.score_scenarios": ",".join(result.scenarios)})  # fmt: skip
    flat = {}
    for label, ranked in result.standing.items():
        st = ranked.standing
        for k, v in {"score_open": st.score_open, "score_hidden": st.score_hidden, "score_full": st.score_full,
                     "rank": st.rank, "gap": st.gap}.items():  # fmt: skip
            if v is not None:
                flat[f"{label}/{k}"] = v
    for label, means in result.scores.items():
        flat.update({f"{label}/mean/{k}": v for k, v in means.items() if v is not None})
    _write_json(out / "score.json", flat)
    return result


# --- CLI (dvc.yaml) -----------------------------------------------------------------------------------------------


def load_params(path: Path) -> LecConfig:
    from omegaconf import OmegaConf

    if not path.exists():
        raise lec_config.ConfigError(f"{path} not found: it is committed with the repository, and "
                                     "`dvc exp run [-S key=value]` recomposes it from conf/")
    return lec_config.load(OmegaConf.load(path))


def run_stage(name: str, cfg: LecConfig, out: Path) -> None:
    """One stage in its own MLflow run, linked to the DVC experiment by tags."""
    from lec import track

    exp = os.environ.get("DVC_EXP_NAME") or "workspace"
    tags = {"lec.dvc.exp_name": exp, "lec.dvc.stage": name, "lec.dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
            "lec.run_dir": str(out.resolve())}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with track.run(cfg, f"{exp}/{name}", tags):
        track.log_config(cfg)
        if name == "curate":
            curate(cfg, out)
        elif name == "finetune":
            finetune(cfg, out)
        elif name == "evaluate":
            evaluate(cfg, out)
        else:
            score(cfg, out)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lec.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)  # only to refuse them with a pointer
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--dir", type=Path, default=PIPELINE_DIR, help="pipeline dir the stages read and write")
    args = parser.parse_args(argv)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.overrides:
            parser.error(f"stages take no overrides (got {' '.join(args.overrides)}): params.yaml is DVC's "
                         "composition of conf/; use `dvc exp run -S key=value` or edit conf/")  # fmt: skip
        cfg = load_params(args.params)
    except (lec_config.ConfigError, HydraException, OmegaConfBaseException) as err:
        sys.stderr.write(f"lec: invalid config: {err}\n")
        return 2
    run_stage(args.stage, cfg, args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
