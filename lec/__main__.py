"""`python -m lec [group=option …] [key=value …]`: compose the run from conf/ and run it (or `-m` to sweep)."""

from __future__ import annotations

import logging
import sys
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lec import config, sweep

config.register()
sweep.register_resolvers()  # the launcher presets' time limits (conf/hydra/launcher/)
log = logging.getLogger("lec")


@hydra.main(version_base="1.3", config_path=str(config.CONF_DIR), config_name="config")
def main(dcfg: DictConfig) -> Optional[float]:
    """The task function; its return value is what a sweeper (Optuna) optimises."""
    if HydraConfig.get().mode is RunMode.MULTIRUN:
        return sweep.job(dcfg, run)  # a failing job is recorded (child FAILED) and returns None; the sweep goes on
    try:
        cfg = config.load(dcfg)  # typed + cross-field checks, before anything heavy is imported
        return run(cfg).objective
    except config.ConfigError as err:
        sys.stderr.write(f"lec: invalid config: {err}\n")
        sys.exit(2)


def run(cfg: config.LecConfig):
    """Plan → run dir → pipeline (all four stages in one MLflow run) → the summary table."""
    from pathlib import Path

    from lec import pipeline, plan, report

    hc = HydraConfig.get()
    p = plan.build(cfg)
    layout = plan.RunLayout.of(cfg.outputs_dir, Path(hc.runtime.output_dir))
    run_name = cfg.run_name or hc.job.override_dirname or "default"
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/") and v is not None}
    summary = pipeline.run(p, cfg, layout, run_name, tags=sweep.child_tags(), choices=choices)
    report.print_summary(summary, p.tracking_uri)
    return summary


def _print_plan(argv: list[str]) -> None:
    """`python -m lec … --plan`: compose, validate and print the plan of what would run; nothing runs."""
    from lec import plan

    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        print(plan.to_yaml(plan.build(config.compose(overrides))), end="")
    except config.ConfigError as err:
        sys.stderr.write(f"lec: invalid config: {err}\n")
        sys.exit(2)
    sys.exit(0)


def _validate_shown_config(argv: list[str]) -> None:
    """`--cfg job` only prints the composition; run lec's cross-field checks on it too, so a config that cannot
    run fails here, before a user launches anything heavy."""
    overrides = [a for a in argv if "=" in a and not a.startswith("-") and not a.startswith("hydra")]
    try:
        config.compose(overrides)
    except config.ConfigError as err:
        sys.stderr.write(f"lec: invalid config: {err}\n")
        sys.exit(2)


if __name__ == "__main__":
    try:
        config.check_override_keys(sys.argv[1:])
    except config.ConfigError as err:
        sys.stderr.write(f"lec: invalid override: {err}\n")
        sys.exit(2)
    if "--plan" in sys.argv[1:]:
        _print_plan(sys.argv[1:])
    if any(a in ("--cfg", "-c") for a in sys.argv[1:]):
        _validate_shown_config(sys.argv[1:])
    main()
