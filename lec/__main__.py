"""`python -m lec [group=option …] [key=value …]`: compose the run from conf/ and run it (or `-m` to sweep).

`--plan` prints the plan of what would run and exits; `--cfg job` prints the composition after lec's checks."""

from __future__ import annotations

import logging
import os
import sys
from typing import List, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from lec import config, files, procs, sweep

config.register()
sweep.register_resolvers()  # the launcher presets' time limits (conf/hydra/launcher/)
log = logging.getLogger("lec")
OPTIONAL_GROUPS = ("experiment", "hparams_search")  # `optional` in conf/config.yaml: Hydra skips an unknown option
# flags after which Hydra composes nothing, or composes something else than conf/config.yaml: lec checks nothing then
OWN_FLAGS = ("--help", "-h", "--hydra-help", "--version", "--info", "-i", "--shell-completion", "-sc",
             "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun")


@hydra.main(version_base="1.3", config_path=str(config.CONF_DIR), config_name="config")
def main(dcfg: DictConfig) -> Optional[float]:
    """The task function; its return value is what a sweeper (Optuna) optimises."""
    procs.install_signal_handlers()  # also in a submitit job process, where the `__main__` block below never runs
    if HydraConfig.get().mode is RunMode.MULTIRUN:
        return sweep.job(dcfg, run)  # a failing job is recorded (child FAILED) and returns None; the sweep goes on
    try:
        cfg = config.load(dcfg)  # typed + cross-field checks, before anything heavy is imported
        return run(cfg).objective
    except config.ConfigError as err:
        _fail(f"lec: invalid config: {err}")
    except files.WriteError as err:  # disk full, an unwritable outputs_dir: Hydra would print a traceback
        _fail(f"lec: {err}", code=1)


def readable_name(overrides: str, choices) -> str:
    """A run's MLflow name, told apart in the runs table: a sweep job's overrides (its siblings differ in them), else
    the overrides or the model/adapter/data choices, and the start time: "tiny-lora-synthetic 12-03 17:45:12"."""
    if sweep.current_job() is not None:
        return overrides or "default"
    import time

    what = overrides or "-".join(str(choices.get(g)) for g in ("model", "adapter", "data"))
    return f"{what} {time.strftime('%m-%d %H:%M:%S')}"


def run(cfg: config.LecConfig):
    """Plan → run dir → pipeline (all four stages in one MLflow run) → the summary table."""
    from pathlib import Path

    from lec import pipeline, plan, report

    config.check_training_run(cfg)
    hc = HydraConfig.get()
    p = plan.build(cfg)
    layout = plan.RunLayout.of(cfg.outputs_dir, Path(hc.runtime.output_dir))
    run_name = cfg.run_name or readable_name(hc.job.override_dirname, hc.runtime.choices)
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/") and v is not None}
    summary = pipeline.run(p, cfg, layout, run_name, tags=sweep.child_tags(), choices=choices)
    report.print_summary(summary, p.tracking_uri)
    return summary


def print_plan(argv: List[str]) -> None:
    """`python -m lec … --plan`: compose, validate and print the plan of what would run; nothing runs."""
    from lec import plan

    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        print(plan.to_yaml(plan.build(config.compose(overrides))), end="")
    except config.ConfigError as err:
        _fail(f"lec: invalid config: {err}")
    sys.exit(0)


def check_command_line(argv: List[str]) -> None:
    """Compose what the command line asks for before Hydra does, so that a bad value fails with one line naming
    the key, the value and what is allowed — in a run, under `--cfg`, and before a sweep's first job (Hydra's own
    report spans 10+ lines, or is a traceback under `--cfg`). A sweep composes each swept value once; a combination
    that fails only lec's cross-field checks is left to the sweep (it records that job FAILED) unless every probe
    fails them."""
    from lec import plan

    if any(a.split("=")[0] in OWN_FLAGS for a in argv):
        return
    overrides = [a for a in argv if ("=" in a or a.startswith("~")) and a[0] != "-"]
    try:
        config.check_override_keys(overrides)
        parsed = OverridesParser.create().parse_overrides(overrides)
        swept = [text for text, o in zip(overrides, parsed) if o.is_sweep_override()]
        in_config = any(o.startswith(("hparams_search=", "hydra.mode=")) for o in overrides)  # hydra.mode: MULTIRUN
        multirun = bool({"-m", "--multirun"} & set(argv)) or in_config
        if swept and not multirun:
            raise config.ConfigError(f"{swept[0]}: a sweep; add -m (--multirun) to run one job per value")
        probes = _sweep_probes(overrides, parsed)  # [overrides] when nothing is swept
        cross_field = []
        for probe in probes:
            _check_optional_groups(probe)
            try:
                plan.build(config.compose(probe))
            except config.CompositionError:
                raise  # Hydra would crash the sweep at this job
            except config.ConfigError as err:
                cross_field.append(err)
        if len(cross_field) == len(probes):
            raise cross_field[0]
        if not any(a in ("--cfg", "-c") for a in argv):  # a run on this machine: can it run and write here?
            first = plan.build(config.compose(probes[0]))
            if not multirun:
                plan.require_machine(first.train)
            files.check_writable(first.outputs_dir, "outputs_dir (run dirs, mlflow.db)")  # before Hydra makes dirs
    except files.WriteError as err:
        _fail(f"lec: {err}", code=1)
    except (config.ConfigError, HydraException, OmegaConfBaseException) as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _fail(f"lec: invalid config: {config.one_line(err) if not isinstance(err, config.ConfigError) else err}")


def _sweep_probes(overrides: List[str], parsed: List[Override]) -> List[List[str]]:
    """Override lists that together take every value of every discrete sweep (`a=1,2`, `choice()`, `range()`):
    the first value of each sweep, then one list per further value. Intervals and globs are the sweeper's."""
    values = []
    for text, o in zip(overrides, parsed):
        if not o.is_sweep_override():
            values.append([text])
        elif o.is_discrete_sweep() and o.value_type is not ValueType.GLOB_CHOICE_SWEEP:
            values.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
    base = [v[0] for v in values if v]
    probes = [base]
    for i, vals in enumerate(v for v in values if v):
        probes += [base[:i] + [other] + base[i + 1 :] for other in vals[1:]]
    return probes


def _check_optional_groups(overrides: List[str]) -> None:
    """`experiment=<typo>` would compose no experiment at all (the group is optional): name the options instead.
    With `hydra.searchpath` set, options may live elsewhere: Hydra has the last word then."""
    if any(o.startswith("hydra.searchpath") for o in overrides):
        return
    for o in overrides:
        group, _, option = o.lstrip("+").partition("=")
        missing = not (config.CONF_DIR / group / f"{option}.yaml").exists()
        if group in OPTIONAL_GROUPS and option not in ("", "null") and missing:
            options = sorted(p.stem for p in (config.CONF_DIR / group).glob("*.yaml"))
            raise MissingConfigException(f"Could not find '{group}/{option}'", f"{group}/{option}", options)


def _fail(message: str, code: int = 2) -> None:
    sys.stderr.write(message.replace("\n", " ") + "\n")
    sys.exit(code)


if __name__ == "__main__":
    with procs.entry_point():  # SIGTERM/SIGHUP/SIGINT: children stopped, the run KILLED, one line, exit 128+N
        if "--plan" in sys.argv[1:]:
            print_plan(sys.argv[1:])
        check_command_line(sys.argv[1:])
        main()
