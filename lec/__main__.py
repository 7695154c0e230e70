"""`python -m lec [group=option …] [key=value …]`: compose the run from conf/ and run it (or `-m` to sweep)."""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import typing
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

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


def _compose_overrides(argv: list[str]) -> list[str]:
    """The key=value arguments config.compose takes: Hydra's own (hydra.run.dir, hydra/launcher=…) are left out,
    except the search path, which is where a user's own config options live."""
    return [a for a in argv if "=" in a and not a.startswith("-")
            and (not a.startswith("hydra") or a.startswith("hydra.searchpath="))]  # fmt: skip


def _validate_composition(argv: list[str]) -> None:
    """Compose and run lec's cross-field checks before Hydra does: for `--cfg job` (it only prints the composition,
    so a config that cannot run fails here) and for a run that reads options from a user's config dir
    (hydra.searchpath=[file:///…]), whose files are not checked by lec's tests. Each failure is one line."""
    try:
        config.compose(_compose_overrides(argv))
    except config.ConfigError as err:
        _fail(f"lec: invalid config: {err}")
    except (HydraException, OmegaConfBaseException) as err:
        _fail(f"lec: invalid config: {_composition_error(err)}")


def _composition_error(err: Exception) -> str:
    """One line for a Hydra/OmegaConf composition error: the option it came from, the full key and what is allowed
    (Hydra's own message spans several lines and ends in a note about HYDRA_FULL_ERROR)."""
    if isinstance(err, MissingConfigException) and err.options is not None:
        return f"no config option '{err.missing_cfg_file}' on the search path; available: {', '.join(err.options)}"
    where = re.match(r"In '([^']+)'", str(err))
    prefix = f"{where.group(1)}: " if where else ""
    cause = err if isinstance(err, OmegaConfBaseException) else err.__context__
    if isinstance(cause, ConfigKeyError) and dataclasses.is_dataclass(cause.object_type):
        valid = ", ".join(typing.get_type_hints(cause.object_type))
        schema = cause.object_type.__name__
        return f"{prefix}unknown key '{cause.full_key}': {schema} has no '{cause.key}'; valid keys: {valid}"
    if isinstance(cause, OmegaConfBaseException) and cause.msg:
        return f"{prefix}key '{cause.full_key}': {cause.msg.splitlines()[0]}"
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())


def _fail(message: str) -> None:
    sys.stderr.write(message.replace("\n", " ") + "\n")
    sys.exit(2)


if __name__ == "__main__":
    try:
        config.check_override_keys(sys.argv[1:])
    except config.ConfigError as err:
        _fail(f"lec: invalid override: {err}")
    shown = any(a in ("--cfg", "-c") for a in sys.argv[1:])
    multirun = any(a in ("-m", "--multirun") for a in sys.argv[1:])  # sweep values (a,b) do not compose as one
    if shown or (not multirun and any(a.startswith("hydra.searchpath=") for a in sys.argv[1:])):
        _validate_composition(sys.argv[1:])
    main()
