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


def test_cli_exit_codes(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "lec.stages", *args], cwd=ROOT, capture_output=True, text=True)

    out = cli("params", "adapter.r=8")  # removed: params.yaml has one writer, `dvc exp run` (tests/test_params.py)
    assert out.returncode == 2 and "invalid choice: 'params'" in out.stderr
    out = cli("finetune", "adapter.r=8")
    assert out.returncode == 2 and "adapter.r=8" in out.stderr and "dvc exp run -S" in out.stderr
    out = cli("curate", "--params", str(tmp_path / "none.yaml"))
    assert out.returncode == 2 and "dvc exp run" in out.stderr
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


@pytest.mark.parametrize("adapter, logged", [("lora", {"config.json", "model.safetensors"}), ("full", {"config.json"})])
def test_full_fine_tune_weights_stay_on_disk_not_in_mlflow(tmp_path, adapter, logged):
    import mlflow

    weights = tmp_path / "adapter"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    (weights / "model.safetensors").write_bytes(b"\0" * 1024)
    cfg = config.compose([f"adapter={adapter}", f"outputs_dir={tmp_path}"])
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run() as run:
        stages._log_weights(cfg, weights)
    client = mlflow.MlflowClient()
    assert {f.path.split("/")[-1] for f in client.list_artifacts(run.info.run_id, "adapter")} == logged
    assert client.get_run(run.info.run_id).data.tags["lec.weights_dir"] == str(weights.resolve())
