"""`python -m lec.stages <stage>`: params.yaml validated by the same schema; stage CLI errors; dvc.yaml matches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lec import config, stages

ROOT = Path(__file__).resolve().parents[1]


def test_missing_params_names_where_it_comes_from(tmp_path):
    with pytest.raises(config.ConfigError, match="dvc exp run"):
        stages.load_params(tmp_path / "missing.yaml")


def stages_cli(*args: str, capsys) -> tuple:
    """`python -m lec.stages …` (lec.pipeline.stage_main) in this process: (exit code, stderr). The real process
    runs in the e2e set (tests/test_dvc.py: dvc repro runs every stage; the exit-code test below)."""
    from lec.pipeline import stage_main

    try:
        code = stage_main(list(args))
    except SystemExit as exit:  # argparse's error(): usage + one line, exit 2
        code = exit.code
    return code, capsys.readouterr().err


def test_cli_exit_codes(tmp_path, capsys, keep_signal_handlers):
    def cli(*args):
        return stages_cli(*args, capsys=capsys)

    code, err = cli("params", "adapter.r=8")  # removed: params.yaml has one writer, `dvc exp run` (test_params.py)
    assert code == 2 and "invalid choice: 'params'" in err
    code, err = cli("finetune", "adapter.r=8")
    assert code == 2 and "adapter.r=8" in err and "dvc exp run -S" in err
    code, err = cli("curate", "--params", str(tmp_path / "none.yaml"))
    assert code == 2 and "dvc exp run" in err
    code, err = cli("train")
    assert code == 2 and "curate" in err  # argparse lists the valid stages


@pytest.mark.e2e
def test_the_stage_process_exits_2_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lec.stages", "curate", "--params", str(tmp_path / "none.yaml")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and "dvc exp run" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_dvc_yaml_stages_match_the_stage_functions():
    import yaml

    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(dvc) == list(stages.STAGES)
    for name, st in dvc.items():
        assert st["cmd"] == f"python -m lec.stages {name}"
        for dep in st.get("deps", []):
            assert dep.startswith("outputs/pipeline/") or (ROOT / dep).exists(), dep
    assert not any("cache" in d for st in dvc.values() for d in st.get("deps", []))  # base weights never a dep
    for name, stage in stages.STAGES.items():  # the registry's outs and metrics are dvc.yaml's
        assert dvc[name].get("outs", []) == [f"outputs/pipeline/{o}" for o in stage.outs], name
        assert dvc[name]["metrics"] == [f"outputs/pipeline/{m}" for m in stage.metrics], name
    assert "eval" not in dvc["finetune"]["params"] and not any(p.startswith("eval") for p in dvc["finetune"]["params"])



@pytest.mark.parametrize("key,value,named", [
    ("adapter.r", 0, "adapter.r=0 is out of range: must be ≥ 1"),
    ("adapter.scheduler", "bogus", "Invalid value 'bogus'"),
    ("serve.port", 99999, "serve.port=99999 is out of range"),
])  # fmt: skip
def test_a_bad_params_yaml_fails_the_stage_in_one_line_before_any_work(tmp_path, key, value, named, capsys,
                                                                     keep_signal_handlers, monkeypatch):  # fmt: skip
    """DVC stage mode: params.yaml is validated and planned like `python -m lec`; nothing is written."""
    import yaml
    from omegaconf import OmegaConf

    params = OmegaConf.to_container(config.compose_raw([]), resolve=True, enum_to_str=True)
    group, leaf = key.split(".")
    params[group][leaf] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    code, err = stages_cli("curate", "--params", str(path), "--dir", str(tmp_path / "pipe"), capsys=capsys)
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "pipe").exists() and not (tmp_path / "outputs").exists()
