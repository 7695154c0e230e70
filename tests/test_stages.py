"""`python -m lec.stages`: params.yaml from the Hydra composition, validated by the same schema; stage CLI errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lec import config, stages

ROOT = Path(__file__).resolve().parents[1]


def test_params_is_the_composition_dvc_would_write(tmp_path):
    text = stages.compose_params(["data=lima_platypus", "adapter.r=8", "eval.max_eval_instances=3"])
    params = OmegaConf.create(text)
    assert "hydra" not in params  # compose() drops it, as DVC's compose_and_dump does
    cfg = config.load(params)
    assert cfg.data.name == "lima_platypus" and cfg.adapter.r == 8 and cfg.eval.max_eval_instances == 3
    assert config.to_container(cfg) == config.to_container(config.compose(
        ["data=lima_platypus", "adapter.r=8", "eval.max_eval_instances=3"]))  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert stages.load_params(path).adapter.r == 8


def test_params_rejects_bad_overrides_before_any_stage(tmp_path):
    with pytest.raises(config.ConfigError, match="valid keys"):
        stages.compose_params(["adapter.rr=8"])
    with pytest.raises(config.ConfigError, match="qlora"):
        stages.compose_params(["adapter=qlora"])  # cross-field check: QLoRA on the cpu preset
    with pytest.raises(config.ConfigError, match="lec.stages params"):
        stages.load_params(tmp_path / "missing.yaml")


def test_cli_exit_codes(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "lec.stages", *args], cwd=ROOT, capture_output=True, text=True)

    out = cli("params", "data=nope", "--params", str(tmp_path / "p.yaml"))
    assert out.returncode == 2 and "lima_platypus" in out.stderr  # names the valid options
    out = cli("curate", "--params", str(tmp_path / "none.yaml"))
    assert out.returncode == 2 and "python -m lec.stages params" in out.stderr
    out = cli("train")
    assert out.returncode == 2 and "curate" in out.stderr  # argparse lists the valid stages


def test_dvc_yaml_stages_match_the_stage_functions():
    import yaml

    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(dvc) == list(stages.STAGES)
    for name, st in dvc.items():
        assert st["cmd"] == f"python -m lec.stages {name}"
        for dep in st.get("deps", []):
            assert dep.startswith("outputs/pipeline/") or (ROOT / dep).exists(), dep
    assert not any("cache" in d for st in dvc.values() for d in st.get("deps", []))  # base weights never a dep
    assert "eval" not in dvc["finetune"]["params"] and not any(p.startswith("eval") for p in dvc["finetune"]["params"])

