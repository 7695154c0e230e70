"""One lec run, top to bottom: machine check → memory pre-flight → curate → finetune → evaluate (real HELM) →
score, inside one MLflow run whose params are the plan. `python -m lec.stages <stage>` (dvc.yaml) runs the same
function with one stage."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import mlflow
import yaml

from lec import config as lec_config
from lec import plan as lec_plan
from lec import files, procs, score, track
from lec.config import Backend, LecConfig
from lec.plan import Plan, RunLayout
from lec.serve import process
from lec.stages import STAGES, load_params

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
    agreement: Dict[str, Dict[str, dict]] = field(default_factory=dict)  # {label: {helm metric: helm, lm_eval, diff}}
    compliance: Dict[str, Dict[str, str]] = field(default_factory=dict)  # {question: {answer, why}} (lec/compliance.py)
    status: str = "RUNNING"  # how the run ended: FINISHED | KILLED | FAILED (as in MLflow)
    end: str = ""  # … in one line: "finished", "stopped by SIGTERM", "WriteError: could not write …"

    @property
    def objective(self) -> float:
        """What a sweep optimises: the tuned model's Score_full against the pool, else its stage score."""
        if "tuned" not in self.standing:
            return float("nan")
        st = self.standing["tuned"].standing
        value = next((v for v in (st.score_full, st.score_open, st.score_hidden) if v is not None), None)
        return float("nan") if value is None else value


def run(plan: Plan, cfg: LecConfig, layout: RunLayout, run_name: str, tags: Optional[Dict[str, str]] = None,
        choices: Optional[Dict[str, str]] = None, stages: Optional[List[str]] = None) -> RunSummary:
    """Run `stages` (default: all four, in registry order) of `plan` in `layout.run_dir`, in one MLflow run."""
    names = list(stages or STAGES)
    training = "finetune" in names and plan.train.enabled
    lec_plan.require_machine(plan.train)  # a CUDA preset without CUDA fails here, before data or weights load
    with files.claim(layout.run_dir, "the run dir"):  # a second live run in this dir is refused, not mixed in
        # the evaluation's processes import on the core this process leaves idle while it imports and starts up
        with _standbys(plan, layout, names):
            if training and plan.train.preflight:
                from lec.preflight import check

                check(plan.train, plan.model)  # refuses a run that will not fit, naming the knobs; before heavy work
            return _run(plan, cfg, layout, run_name, names, tags, choices)


def _run(plan: Plan, cfg: LecConfig, layout: RunLayout, run_name: str, names: List[str],
         tags: Optional[Dict[str, str]], choices: Optional[Dict[str, str]]) -> RunSummary:
    config = lec_config.to_container(cfg)
    files.write_text(layout.config, yaml.safe_dump(config, sort_keys=False), "the run's config")  # servers load it
    timings: Dict[str, float] = {}
    tags = {"lec.run_dir": str(layout.run_dir), **(tags or {})}
    with track.run(plan, run_name, tags) as active:
        summary = RunSummary(layout.run_dir, active.info.run_id, timings)
        try:
            with files.one_line("the run's plan and environment (MLflow artifacts)"):
                track.log_plan(plan, config, choices)
            _stages(plan, layout, names, summary)
            if "score" in names:  # the evaluators' checklist, from everything the run dir now holds
                summary.compliance = _compliance(plan, layout, summary)
                track.record_compliance(summary.compliance)
            track.log_metrics({f"timing/{k}_s": v for k, v in timings.items()})
            summary.status, summary.end = procs.end_state(None)
        except BaseException as err:
            summary.status, summary.end = procs.end_state(err)
            raise
        finally:  # summary.json says how the run ended, however it ended
            with contextlib.suppress(OSError, files.WriteError):  # a full disk: the error on its way out says so
                files.write_json(layout.run_dir / "summary.json", _jsonable(summary), "the run summary")
        mlflow.log_artifact(str(layout.run_dir / "summary.json"))
    return summary


@contextlib.contextmanager
def _standbys(plan: Plan, layout: RunLayout, names: List[str]) -> Iterator[None]:
    """The model server and helm-run the evaluate stage will start, importing while this process starts the run and
    fine-tunes (lec/standby.py); stopped after. Without fine-tuning first there is nothing to overlap with."""
    ahead = "evaluate" in names and "finetune" in names[: names.index("evaluate")] and plan.train.enabled
    with contextlib.ExitStack() as stack:
        if ahead and not plan.eval.endpoint:
            stack.enter_context(process.standby(layout.run_dir / "standby-server.log"))
        if ahead and Backend.helm in plan.eval.backends:
            from lec.evaluate import helm

            stack.enter_context(helm.standby(layout.cache, layout.run_dir / "standby-helm-run.log"))
        yield


def _stages(plan: Plan, layout: RunLayout, names: List[str], summary: RunSummary) -> None:
    for name in names:
        if name == "finetune" and not plan.train.enabled:
            log.info("── finetune skipped (train.enabled=false): the base model is evaluated")
            continue
        log.info("── %s", name)
        start = time.perf_counter()
        stage = STAGES[name]
        # a full disk: one line naming the stage; metrics go to MLflow in batches, not a transaction each
        with files.one_line(f"the {name} stage's output"), track.batched_metrics():
            result = stage.run(plan, layout)
            stage.record(result, plan, layout)
        summary.timings[name] = time.perf_counter() - start
        log.info("── %s done in %.1f s", name, summary.timings[name])
        _summarise(summary, name, result)


def _compliance(plan: Plan, layout: RunLayout, summary: RunSummary) -> Dict[str, Dict[str, str]]:
    from lec import compliance

    def read(name: str) -> Optional[dict]:  # a DVC stage process knows the earlier stages from their files
        path = layout.run_dir / name
        return json.loads(path.read_text()) if path.exists() else None

    train = summary.train or read("train.json")
    ev = read("eval_metrics.json") or {}
    return compliance.check(plan, layout, trained=train is not None and plan.train.enabled, train=train,
                            eval_seconds=ev.get("seconds"), eval_timed_out=bool(ev.get("timed_out")))  # fmt: skip


def _summarise(summary: RunSummary, name: str, result: Any) -> None:
    if name == "finetune":
        summary.train = track.train_summary(result)
    elif name == "evaluate":
        summary.eval_timed_out, summary.agreement = result.timed_out, result.agreement
    elif name == "score":
        summary.challenge, summary.scores, summary.standing = result.challenge, result.scores, result.standing


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
            "eval_timed_out": s.eval_timed_out, "agreement": s.agreement, "compliance": s.compliance, "status": s.status, "end": s.end}  # fmt: skip


def stage_main(argv: Optional[List[str]] = None) -> int:
    """`python -m lec.stages <stage>` (dvc.yaml): one stage of the plan in params.yaml, in its own MLflow run."""
    parser = argparse.ArgumentParser(prog="python -m lec.stages", description="Run one lec stage on params.yaml (dvc.yaml)")
    parser.add_argument("stage", choices=tuple(STAGES))
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--dir", type=Path, default=None,
                        help="pipeline dir the stages read and write (default: <outputs_dir>/pipeline)")  # fmt: skip
    args = parser.parse_args(argv)
    with procs.entry_point():  # SIGTERM/SIGHUP/SIGINT (dvc's own stop): children stopped, the run KILLED
        return _stage_main(parser, args)


def _stage_main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.overrides:
        parser.error(f"stages take no overrides (got {' '.join(args.overrides)}): params.yaml has one writer, DVC's "
                     "Hydra composition of conf/: use `dvc exp run -S key=value` or edit conf/")  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg, plan = load_params(args.params)
    except lec_config.ConfigError as err:
        sys.stderr.write(f"lec: invalid config: {err}\n")
        return 2
    layout = RunLayout.of(plan.outputs_dir, args.dir)
    exp = os.environ.get("DVC_EXP_NAME") or "workspace"
    tags = {"lec.dvc.exp_name": exp, "lec.dvc.stage": args.stage,
            "lec.dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", "")}  # fmt: skip
    try:
        run(plan, cfg, layout, f"{exp}/{args.stage}", tags=tags, stages=[args.stage])
    except lec_config.ConfigError as err:  # e.g. a CUDA preset on a machine without one, the memory pre-flight
        sys.stderr.write(f"lec: {err}\n")
        return 2
    return 0
