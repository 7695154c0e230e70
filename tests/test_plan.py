"""lec/plan.py: the frozen plan is what runs. Every key a shipped search or a README sweep varies changes the plan;
MLflow params are the plan's values and the environment; `--plan` prints it; layers point down (no import cycles,
config imports nothing from lec)."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from lec import config, plan

ROOT = Path(__file__).resolve().parents[1]


def _plan(*overrides: str) -> plan.Plan:
    return plan.build(config.compose(list(overrides)))


def _values(spec: str) -> list:
    """Two values of an Optuna search-space spec (choice(4, 8) / tag(log, interval(1e-5, 5e-4)))."""
    inner = re.search(r"(?:choice|interval)\(([^()]*)\)", spec).group(1)
    return [v.strip() for v in inner.split(",")][:2]


def swept_keys() -> list:
    """(key, [value, value]) for every key a shipped hparams_search file or a README `-m` sweep varies."""
    out = []
    for f in sorted((ROOT / "conf" / "hparams_search").glob("*.yaml")):
        params = yaml.safe_load(f.read_text())["hydra"]["sweeper"]["params"]
        out += [(k, _values(v)) for k, v in params.items()]
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("python -m lec ") and " -m " in line:
            for tok in line.split("#")[0].split():
                key, _, vals = tok.partition("=")
                if "," in vals and not key.startswith("hydra"):
                    out.append((key, vals.split(",")[:2]))
    return out


@pytest.mark.parametrize("key,values", swept_keys(), ids=lambda x: str(x))
def test_every_swept_key_changes_the_plan(key, values):
    a, b = (plan.params(_plan(f"{key}={v}")) for v in values)
    assert a != b, f"sweeping {key} over {values} changes nothing that runs"


def test_there_are_swept_keys_to_check():
    keys = {k for k, _ in swept_keys()}
    assert {"adapter.r", "adapter.lr", "adapter.alpha", "adapter.dropout", "data"} <= keys


def test_the_learning_rate_is_adapter_lr_on_every_model_and_adapter():
    assert _plan().train.lr == 3e-3  # conf/recipe/tiny_lora.yaml writes adapter.lr
    assert _plan("adapter.lr=1e-2").train.lr == 1e-2  # the command line wins over the recipe file
    assert _plan("adapter=full").train.lr == 1e-3  # conf/recipe/tiny_full.yaml
    assert _plan("adapter=full", "adapter.lr=1e-5").train.lr == 1e-5
    gpu = _plan("hardware=rtx4090", "model=mistral7b", "adapter=lora")
    assert gpu.train.lr == 5e-5  # no recipe file for mistral7b_lora: the adapter's own rate


def test_epochs_steps_targets_and_row_length_have_one_key_each():
    p = _plan("adapter.epochs=3")
    assert (p.train.epochs, p.train.max_steps) == (3.0, None)
    p = _plan("train.max_steps=7")
    assert (p.train.epochs, p.train.max_steps) == (None, 7)  # steps given: epochs do not run
    assert _plan().train.lora.targets == plan.BLOCK_LINEARS["llama"]  # all-linear, resolved for the tiny Llama
    assert _plan("adapter.target_modules=[q_proj,v_proj]").train.lora.targets == ("q_proj", "v_proj")
    p = _plan("hardware.max_seq_len=256")
    assert p.train.seq_len == 256 and p.train.tokens_per_step == 256 * p.train.rows_per_step
    p = _plan("hardware=rtx4090", "model=mistral7b", "adapter=qlora")
    assert p.train.pack_len == 2048 and p.train.tokens_per_step == 8 * 4 * 2048  # 65k tokens per optimizer step
    assert _plan("serve.max_seq_len=1024").serve.context == 1024
    assert _plan("hardware.time_budget_h=0.25").train.time_budget_s == 900


def test_removed_keys_are_refused():
    for key in ("model.lr", "model.lora_target_modules", "model.max_seq_len", "train.epochs", "train.pack_len",
                "train.time_budget_s", "hardware.packing", "data.curation.length.max_tokens"):  # fmt: skip
        with pytest.raises(config.ConfigError, match="unknown key"):
            config.compose([f"{key}=1"])


def test_the_plan_is_frozen_and_resolves_the_serving_template():
    p = _plan("data.template=alpaca")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.train.lr = 1.0  # type: ignore[misc]
    assert "{prompt}" in p.serve.prompt_template and not p.serve.chat
    assert _plan().serve.prompt_template is None  # raw: HELM's prompt as sent
    assert _plan("data.template=chat").serve.chat
    assert _plan("serve.prompt_template='### Q: {prompt}'").serve.prompt_template == "### Q: {prompt}"


def test_plan_checks_that_need_lec_tables():
    with pytest.raises(config.ConfigError, match="generator=nope: unknown; valid: mmlu_order"):
        _plan("data.sources.0.generator=nope")
    with pytest.raises(config.ConfigError, match="score.pool=missing.json"):
        _plan("score.pool=missing.json")
    with pytest.raises(config.ConfigError, match="model=\\{model\\}"):
        _plan("eval.entries=['mmlu:subject=x']", "eval.confs=[]")
    with pytest.raises(config.ConfigError, match="no run entries"):
        _plan("eval.entries=[]", "eval.confs=[]")


def test_a_cuda_preset_fails_at_start_on_a_machine_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    p = _plan("hardware=rtx4090", "model=mistral7b", "adapter=qlora")
    with pytest.raises(config.ConfigError, match="needs a CUDA GPU, and this machine has none"):
        plan.require_machine(p.train)
    plan.require_machine(_plan().train)  # the cpu preset needs nothing


def test_mlflow_params_are_the_plan_and_the_environment(tmp_path, mlflow_db):
    from mlflow.tracking import MlflowClient

    from lec import track

    cfg = config.compose(["adapter.lr=1e-2", f"outputs_dir={tmp_path}"])
    p = plan.build(cfg)
    with track.run(p, "params") as active:
        track.log_plan(p, config.to_container(cfg), {"model": "tiny"})
    run = MlflowClient(p.tracking_uri).get_run(active.info.run_id)
    params, tags = run.data.params, run.data.tags
    assert params["train.lr"] == "0.01" and params["train.tokens_per_step"] == str(p.train.tokens_per_step)
    assert params["train.lora.targets"] == str(list(plan.BLOCK_LINEARS["llama"])) and params["choice.model"] == "tiny"
    assert "adapter.lr" not in params  # what ran, not what was typed
    for key in ("git_commit", "git_dirty", "python", "torch", "cuda", "gpu", "transformers", "peft", "crfm-helm"):
        assert tags[f"lec.env.{key}"], key
    arts = {a.path for a in MlflowClient(p.tracking_uri).list_artifacts(run.info.run_id, "environment")}
    assert arts == {"environment/pip_freeze.txt"}


def test_plan_flag_prints_the_plan_and_refuses_bad_values(capsys):
    """`python -m lec --plan …` (lec.__main__.print_plan) in this process; tests/test_readme.py runs `python -m lec
    --plan` as a process."""
    from lec import __main__ as cli

    with pytest.raises(SystemExit) as exit:
        cli.print_plan(["--plan", "adapter.lr=1e-2"])
    out = capsys.readouterr()
    assert exit.value.code == 0, out.err
    assert yaml.safe_load(out.out)["train"]["lr"] == 0.01
    with pytest.raises(SystemExit) as exit:
        cli.print_plan(["--plan", "adapter.r=0"])
    bad = capsys.readouterr()
    assert exit.value.code == 2 and bad.err.strip() == "lec: invalid config: adapter.r=0 is out of range: must be ≥ 1"


def _imports(path: Path) -> set:
    """lec modules a file imports anywhere (functions included), except under `if __name__ == "__main__":`."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test):
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lec":
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "lec"}
    return found


def test_layers_point_down_no_import_cycles():
    pkg = ROOT / "lec"
    mods = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in pkg.rglob("*.py")}
    graph = {m: {d for d in _imports(p) if d in mods and d != m and d != "lec"} for m, p in mods.items()}
    assert graph["lec.config"] == set(), "lec.config imports nothing from lec"

    def reaches(a: str, b: str) -> bool:
        seen, todo = set(), [a]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                if nxt == b:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    cycles = sorted((a, b) for a in graph for b in graph[a] if reaches(b, a))
    assert not cycles, f"import cycles: {cycles}"
