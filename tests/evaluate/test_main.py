"""`python -m lec.evaluate`: what each evaluate.source brings, and what a training run refuses (the e2e tests in
tests/test_e2e.py and tests/evaluate/test_resume.py run it for real)."""

from __future__ import annotations

import pytest
import yaml

from lec import config
from lec.evaluate import __main__ as cli


def _source(overrides):
    return cli.source(config.compose(overrides))


def test_the_composed_model_is_the_default_source():
    cfg, adapter, endpoint, kind, name = _source([])
    assert (adapter, endpoint, kind, name) == (None, None, "model", "tiny")


def test_an_adapter_source_keeps_the_composed_model(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    cfg, adapter, _, kind, name = _source([f"evaluate.source=adapter:{tmp_path}/adapter", "evaluate.name=mine"])
    assert adapter == tmp_path / "adapter" and kind == "adapter" and name == "mine" and cfg.model.name == "tiny"


def test_a_run_source_brings_what_its_model_is_and_the_command_brings_the_suite(tmp_path):
    own = config.to_container(config.compose(["serve.prompt_template='Q: {prompt} A:'", "model.tiny.hidden_size=64",
                                              "eval.max_eval_instances=3"]))  # fmt: skip
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(own))
    cfg, adapter, _, kind, name = _source([f"evaluate.source=run:{run}", "eval.max_eval_instances=7"])
    assert kind == "run" and adapter == run / "adapter" and name == "run"
    assert cfg.serve.prompt_template == "Q: {prompt} A:" and cfg.model.tiny.hidden_size == 64  # the run's
    assert cfg.eval.max_eval_instances == 7  # this command's


def test_an_endpoint_source_is_its_url():
    _, adapter, endpoint, kind, name = _source(["evaluate.source=endpoint:http://127.0.0.1:8080/"])
    assert (adapter, endpoint, kind, name) == (None, "http://127.0.0.1:8080", "endpoint", "http://127.0.0.1:8080")


@pytest.mark.parametrize("overrides", [["evaluate.source=endpoint:http://127.0.0.1:1"], ["evaluate.name=x"]])
def test_a_training_run_refuses_the_evaluation_keys(overrides):
    with pytest.raises(config.ConfigError, match="read by `python -m lec.evaluate`"):
        config.check_training_run(config.compose(overrides))
    config.check_training_run(config.compose([]))


def test_run_and_sweep_dirs_go_under_evaluations_and_leaderboards_unless_given():
    added = cli.with_run_dir(["x=1"])
    assert any(a.startswith("hydra.run.dir=${outputs_dir}/evaluations/") for a in added)
    assert any(a.startswith("hydra.sweep.dir=${outputs_dir}/leaderboards/") for a in added)
    assert "hydra.sweep.subdir=${hydra.job.num}" in added
    assert cli.with_run_dir(["hydra.run.dir=/a", "hydra.sweep.dir=/b", "hydra.sweep.subdir=c"]) == \
        ["hydra.run.dir=/a", "hydra.sweep.dir=/b", "hydra.sweep.subdir=c"]  # fmt: skip
