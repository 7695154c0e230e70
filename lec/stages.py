"""The four stages of a run and their registry, used by `pipeline.run` (all four, one MLflow run),
`python -m lec.stages <stage>` (one per process, for dvc.yaml) and the test that checks dvc.yaml against it.

Each stage is a function of (plan, layout) that reads its inputs from the run dir, writes its outputs there and
returns a typed result; `lec.track.record_<stage>` turns that result into MLflow entries and the stage's DVC files:

    curate    → data/{train,val}.jsonl, data/curation_report.json    · curation.json
    finetune  → adapter/, checkpoints/, train_log.jsonl              · train.json, train_loss.csv
    evaluate  → helm/                                                · eval_metrics.json, scenario_scores.csv
    score     →                                                      · score.json

    python -m lec.stages <curate|finetune|evaluate|score> [--params params.yaml] [--dir outputs/pipeline]

A stage process reads params.yaml (what DVC's Hydra composition of conf/ wrote), validates and plans it like
`python -m lec`, and runs the stage inside its own MLflow run named `<DVC experiment>/<stage>`, tagged
lec.dvc.exp_name (DVC_EXP_NAME; "workspace" under plain `dvc repro`), lec.dvc.stage and lec.dvc.baseline_rev.
A DVC run-cache hit runs nothing, so it logs nothing.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from lec import track
from lec.plan import Plan, RunLayout

log = logging.getLogger("lec.stages")


def base_dir(plan: Plan, layout: RunLayout) -> Optional[Path]:
    """The in-process tiny model's weights, saved once under the shared cache (never a DVC output); None for hub
    and local models, which load from model.hf_id / model.local_path."""
    from lec.models import materialize_base

    return materialize_base(plan.model, layout.cache)


def curate(plan: Plan, layout: RunLayout):
    from lec.data.curate import curate as build

    return build(plan.data, plan.train.seq_len, plan.model, plan.eval, layout.data, base_dir(plan, layout),
                 layout.outputs)  # fmt: skip


def finetune(plan: Plan, layout: RunLayout):
    from lec.train import finetune as train

    return train(plan.train, plan.model, layout, base_dir(plan, layout), on_metrics=track.log_metrics,
                 run_id=track.active_run_id())  # written into each checkpoint: a resumed run names its predecessor


def evaluate(plan: Plan, layout: RunLayout):
    from lec.evaluate.run import evaluate as run_eval

    adapter = layout.adapter if layout.adapter.exists() else None
    return run_eval(plan.eval, plan.serve, plan.model, layout, adapter, base_dir(plan, layout))


@dataclass
class Scored:
    challenge: Dict[str, Dict[str, float]] = field(default_factory=dict)  # {label: {challenge metric: value}}
    scores: Dict[str, Dict[str, float]] = field(default_factory=dict)  # {label: {scenario | raw_score: mean}}
    standing: Dict[str, Any] = field(default_factory=dict)  # {label: score.PoolResult}
    unranked: Dict[str, str] = field(default_factory=dict)  # {label: why it could not be ranked}
    scenarios: List[str] = field(default_factory=list)
    pool_size: int = 0


def score(plan: Plan, layout: RunLayout) -> Scored:
    from lec import score as scorer

    ev = json.loads((layout.run_dir / "eval_metrics.json").read_text())
    metrics_by_label = ev["metrics"]  # in the challenge's terms, from the first of eval.backends
    pool = scorer.load_pool(plan.score.pool)
    result = Scored(pool_size=len(pool))
    for label, scenarios in metrics_by_label.items():
        metrics = scorer.challenge_metrics(scenarios)
        result.challenge[label], result.scores[label] = metrics, scorer.raw_score(metrics)
        try:
            ranked = scorer.score_against_pool(metrics, pool, plan.score.mode.value, plan.score.only_evaluated)
        except scorer.ScoreError as err:  # e.g. nothing the pool is ranked on was evaluated
            log.warning("%s: not ranked against the pool: %s", label, err)
            result.unranked[label] = str(err)
            continue
        result.standing[label] = ranked
        result.scenarios = ranked.scenarios
    return result


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Plan, RunLayout], Any]
    record: Callable[[Any, Plan, RunLayout], None]
    outs: Tuple[str, ...]  # under the run dir: what dvc.yaml declares as the stage's outs
    metrics: Tuple[str, ...]  # … and as its metrics


STAGES: Dict[str, Stage] = {s.name: s for s in (
    Stage("curate", curate, track.record_curate, ("data",), ("curation.json",)),
    Stage("finetune", finetune, track.record_finetune, ("adapter",), ("train.json",)),
    Stage("evaluate", evaluate, track.record_evaluate, ("helm",), ("eval_metrics.json",)),
    Stage("score", score, track.record_score, (), ("score.json",)),
)}  # fmt: skip


# --- CLI (dvc.yaml) -----------------------------------------------------------------------------------------------


def load_params(path: Path):
    """params.yaml → the validated config and its plan (the same boundary as `python -m lec`)."""
    from omegaconf import OmegaConf

    from lec import config as lec_config
    from lec import plan as lec_plan

    if not path.exists():
        raise lec_config.ConfigError(f"{path} not found: it is written by DVC's Hydra composition of conf/ "
                                     "(`dvc exp run`), and committed with the repository")  # fmt: skip
    cfg = lec_config.load(OmegaConf.load(path))
    lec_config.check_training_run(cfg)
    return cfg, lec_plan.build(cfg)


if __name__ == "__main__":  # the CLI lives with the runner (lec.pipeline), which imports this registry
    from lec.pipeline import stage_main

    sys.exit(stage_main())
