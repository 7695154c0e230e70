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
    return run(config.load(dcfg)).objective  # typed + cross-field checks, before anything heavy is imported


def run(cfg: config.LecConfig):
    from pathlib import Path

    from lec import pipeline, report, track

    hc = HydraConfig.get()
    run_name = cfg.run_name or hc.job.override_dirname or "default"
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/") and v is not None}
    summary = pipeline.run(cfg, Path(hc.runtime.output_dir), run_name, choices)
    report.print_summary(summary, track.tracking_uri(cfg))
    return summary


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
    if any(a in ("--cfg", "-c") for a in sys.argv[1:]):
        _validate_shown_config(sys.argv[1:])
    main()
