"""Fast checks of the sweep configs: launcher presets' time limits, the Optuna group, objective rules."""

from __future__ import annotations

import math

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lec import config, sweep
from lec.config import SweepConfig


def _hydra_cfg(overrides):
    config.register()
    sweep.register_resolvers()
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("hw", ["rtx4090", "a100_40gb", "h100"])
def test_slurm_preset_time_is_the_training_and_eval_budgets_plus_a_margin(hw):
    cfg = _hydra_cfg([f"hydra/launcher=slurm_{hw}", f"hardware={hw}", "eval=open_600"])  # the sample conf's suite
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.gpus_per_node == 1
    hours, evalmin = cfg.hardware.time_budget_h, cfg.eval.budget_min
    assert (hours, evalmin) == (24, 120)  # the challenge's budgets
    assert launcher.timeout_min == hours * 60 + evalmin + 30
    full = _hydra_cfg([f"hydra/launcher=slurm_{hw}", f"hardware={hw}", "eval=full"])
    assert full.hydra.launcher.timeout_min == hours * 60 + full.eval.budget_min + 30  # follows the suite's budget


def test_local_isolated_preset_follows_the_hardware_too():
    cfg = _hydra_cfg(["hydra/launcher=local_isolated"])  # hardware=cpu: 0.5 h + eval=smoke: 10 min
    assert cfg.hydra.launcher._target_.endswith("LocalLauncher") and cfg.hydra.launcher.timeout_min == 30 + 10 + 30


def test_hparams_search_selects_optuna_only_when_asked():
    plain = _hydra_cfg([])
    assert plain.hydra.sweeper._target_.endswith("BasicSweeper")  # default runs never touch the plugin
    cfg = _hydra_cfg(["hparams_search=lora_optuna", "sweep.direction=minimize"])
    s = cfg.hydra.sweeper
    assert s._target_.endswith("OptunaSweeper") and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert s.direction == "minimize"  # follows sweep.direction
    assert {"adapter.r", "adapter.lr"} <= set(s.params)
    for key in s.params:  # every searched key is a real config key
        config.check_override_keys([f"{key}=1"])


def test_callback_is_registered_for_every_run():
    assert _hydra_cfg([]).hydra.callbacks.lec_sweep._target_ == "lec.sweep.SweepCallback"


def test_objective_falls_back_to_the_stage_score_only_for_the_default():
    default = SweepConfig()
    assert sweep.objective_of({"challenge/score_full": 0.4, "challenge/score_open": 0.9}, default) == 0.4
    assert sweep.objective_of({"challenge/score_open": 0.9}, default) == 0.9  # a one-stage suite
    other = SweepConfig(objective="helm/mmlu/exact_match")
    assert math.isnan(sweep.objective_of({"challenge/score_open": 0.9}, other))


def test_bad_direction_and_resume_key_are_rejected_before_work():
    with pytest.raises(config.ConfigError, match=r"sweep.direction=up.*expected one of \[maximize, minimize\]"):
        config.compose(["sweep.direction=up"])
    with pytest.raises(config.ConfigError, match=r"unknown key 'sweep.resum': SweepConfig .*has no 'resum'; valid keys: .*resume"):
        config.check_override_keys(["sweep.resum=x"])


def test_no_job_context_outside_a_sweep():
    assert sweep.current_job() is None and sweep.child_tags() == {}


def test_override_dirname_ignores_where_a_sweep_goes():
    excluded = OmegaConf.to_container(_hydra_cfg([]).hydra.job.config.override_dirname.exclude_keys)
    assert "sweep.resume" in excluded and "outputs_dir" in excluded


def _with_task(cfg, task, **sweeper):
    OmegaConf.set_struct(cfg, False)
    cfg.hydra.overrides.task = task
    for key, value in sweeper.items():
        cfg.hydra.sweeper[key] = value
    return cfg


def test_parallel_jobs_counts_what_submitit_local_starts_at_once():
    local = _hydra_cfg(["hydra/launcher=submitit_local"])
    assert sweep.parallel_jobs(_with_task(local, ["adapter.r=4,8,16", "adapter.lr=1e-4,3e-4", "seed=1"])) == 6
    assert sweep.parallel_jobs(_with_task(local, ["adapter.r=4,8"], max_batch_size=1)) == 1  # one after another
    assert sweep.parallel_jobs(_with_task(local, ["seed=range(3)"], max_batch_size=None,
                                          params={"adapter.r": "4,8"})) == 6  # fmt: skip
    basic = _hydra_cfg([])  # the in-process launcher runs jobs one at a time
    assert sweep.parallel_jobs(_with_task(basic, ["adapter.r=4,8"])) == 1
    optuna = _hydra_cfg(["hydra/launcher=submitit_local", "hparams_search=lora_optuna", "hydra.sweeper.n_jobs=3"])
    assert sweep.parallel_jobs(optuna) == 3


def test_cpu_threads_share_the_cores_among_jobs_at_once(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv(config.PARALLEL_JOBS_ENV, raising=False)
    assert config.cpu_threads(2) == 2  # a lone run
    monkeypatch.setenv(config.PARALLEL_JOBS_ENV, "8")
    assert config.cpu_threads(2) == 1
    monkeypatch.setenv(config.PARALLEL_JOBS_ENV, "3")
    assert config.cpu_threads(4) == 2  # 8 cores // 3 jobs
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "5")
    assert config.cpu_threads(2) == 5  # what SLURM gave the job
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setenv(config.PARALLEL_JOBS_ENV, "2")
    assert _hydra_cfg(["hardware=cpu"]).hardware.num_threads == 2  # 8 cores // 2 jobs, capped at the lone 2
