"""`python -m lec.evaluate [overrides]`: evaluate a model without training — with the same config groups and plan as
`python -m lec`, in one MLflow run tagged `lec.kind=evaluation`, in a run dir under `<outputs_dir>/evaluations/`.

    python -m lec.evaluate                                              # the composed model (default: the tiny base)
    python -m lec.evaluate model=hf model.local_path=/models/Mistral-7B-v0.1 eval=open_600   # any local or hub model
    python -m lec.evaluate evaluate.source=adapter:outputs/runs/<time>/adapter   # a PEFT adapter on top of `model`
    python -m lec.evaluate evaluate.source=run:outputs/runs/<time>      # a finished lec run: its model and adapter
    python -m lec.evaluate evaluate.source=endpoint:http://127.0.0.1:8080   # a server that is already running
    python -m lec.evaluate -m evaluate.source=model,run:outputs/runs/<time>  # several → one leaderboard

The evaluate and score stages are the very ones of `python -m lec` (lec/stages.py); HELM's request cache is keyed by
the served model's identity, so the same command started again after a kill re-asks nothing already answered.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lec import __main__ as lec_main
from lec import config, files, procs
from lec.evaluate.run import EvalError

log = logging.getLogger("lec.evaluate")
RUN_DIR = "hydra.run.dir=${outputs_dir}/evaluations/${now:%Y-%m-%d_%H-%M-%S_%f}"
SWEEP_DIR = "hydra.sweep.dir=${outputs_dir}/leaderboards/${now:%Y-%m-%d_%H-%M-%S_%f}"
SWEEP_SUBDIR = "hydra.sweep.subdir=${hydra.job.num}"  # a source holds "/" and ":": not a dir name
# What a finished run dir keeps of its own config (what the model *is*); the rest comes from this command.
FROM_THE_RUN = ("hardware", "model", "data", "adapter", "serve")


@hydra.main(version_base="1.3", config_path=str(config.CONF_DIR), config_name="config")
def main(dcfg: DictConfig) -> Optional[float]:
    procs.install_signal_handlers()
    if HydraConfig.get().mode is RunMode.MULTIRUN:  # one model per job; the sweep's end writes the leaderboard
        from lec import sweep

        return sweep.job(dcfg, evaluate)
    try:
        cfg = config.load(dcfg)
        return evaluate(cfg).objective
    except config.ConfigError as err:
        lec_main._fail(f"lec.evaluate: invalid config: {err}")
    except files.WriteError as err:
        lec_main._fail(f"lec.evaluate: {err}", code=1)
    except EvalError as err:  # the model or endpoint could not be evaluated; the run is FAILED with the reason
        lec_main._fail(f"lec.evaluate: {str(err).splitlines()[0]}", code=1)


def source(cfg: config.LecConfig) -> Tuple[config.LecConfig, Optional[Path], Optional[str], str, str]:
    """evaluate.source → (the config to evaluate with, the adapter dir, the endpoint URL, the kind, the entry's name)."""
    kind, where = config.evaluate_source(cfg.evaluate)
    name = cfg.evaluate.name
    if kind == "run":
        run_dir = Path(where)
        own = OmegaConf.load(run_dir / "config.yaml")
        merged = OmegaConf.merge(OmegaConf.structured(cfg), {k: own[k] for k in FROM_THE_RUN if k in own})
        return config.load(merged), run_dir / "adapter", None, kind, name or run_dir.name
    if kind == "adapter":
        adapter = Path(where)
        return cfg, adapter, None, kind, name or f"{cfg.model.name}+{adapter.parent.name}/{adapter.name}"
    if kind == "endpoint":
        return cfg, None, where, kind, name or where
    return cfg, None, None, kind, name or cfg.model.local_path or cfg.model.hf_id or cfg.model.name


def evaluate(cfg: config.LecConfig):
    """Source → plan → run dir (the adapter linked in as `adapter/`) → evaluate + score, in one MLflow run."""
    from lec import pipeline, plan, report, sweep

    cfg, adapter, endpoint, kind, name = source(cfg)
    hc = HydraConfig.get()
    p = plan.build(cfg)
    if endpoint is not None:
        p = dataclasses.replace(p, eval=dataclasses.replace(p.eval, endpoint=endpoint, eval_base=False))
    layout = plan.RunLayout.of(cfg.outputs_dir, Path(hc.runtime.output_dir))
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    if adapter is not None:  # the run dir looks like a training run's: the evaluate stage finds adapter/ there
        layout.adapter.symlink_to(adapter, target_is_directory=True)
    tags = {"lec.kind": "evaluation", "lec.eval.source": cfg.evaluate.source, "lec.eval.kind": kind,
            "lec.eval.name": name, **sweep.child_tags()}  # fmt: skip
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/") and v is not None}
    summary = pipeline.run(p, cfg, layout, name, tags=tags, choices=choices, stages=["evaluate", "score"])
    report.print_summary(summary, p.tracking_uri)
    return summary


def with_run_dir(argv: List[str]) -> List[str]:
    """An evaluation's run (and sweep) dir is under evaluations/ (leaderboards/), unless the command line says where."""
    extra = [d for d in (RUN_DIR, SWEEP_DIR, SWEEP_SUBDIR) if not any(a.startswith(d.split("=")[0] + "=") for a in argv)]
    return argv + extra


if __name__ == "__main__":
    with procs.entry_point():
        lec_main.check_command_line(sys.argv[1:])
        sys.argv[1:] = with_run_dir(sys.argv[1:])
        main()
