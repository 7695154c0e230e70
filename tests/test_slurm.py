"""SLURM for real: a single-node cluster on this machine (scripts/slurm_local.sh: Debian's slurm-wlm + munge), and
`hydra/launcher=slurm_cpu` submitting through `sbatch` to its slurmd — a 2-model leaderboard and a 2-job training
sweep, each job an MLflow child of one parent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("a local SLURM cluster needs root (munged, slurmd)")
    where = tmp_path_factory.mktemp("slurm")
    script = ROOT / "scripts" / "slurm_local.sh"
    started = subprocess.run([str(script), "start", str(where)], capture_output=True, text=True, timeout=600)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield dict(os.environ, SLURM_CONF=str(where / "slurm.conf"))
    finally:
        subprocess.run([str(script), "stop", str(where)], timeout=120)


def _adapter(tmp: Path) -> Path:
    """A LoRA adapter on the tiny model (initialised, not trained): a second model to rank."""
    from peft import LoraConfig, get_peft_model

    from lec import config
    from lec.models import load_model, materialize_base

    cfg = config.compose([])
    base = materialize_base(cfg.model, tmp / "cache")
    model = get_peft_model(load_model(cfg.model, path=str(base)), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                             init_lora_weights="gaussian"))  # fmt: skip
    model.save_pretrained(tmp / "adapter")
    return tmp / "adapter"


def _runs(tmp: Path, parent_kind: str):
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name("lec")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and r.data.tags.get("lec.kind") == parent_kind]
    return parents, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def test_a_two_model_leaderboard_through_sbatch(cluster, tmp_path):
    adapter = _adapter(tmp_path)
    cmd = [sys.executable, "-m", "lec.evaluate", "-m", "hydra/launcher=slurm_cpu", "experiment=ci_small",
           f"outputs_dir={tmp_path}", f"hydra.sweep.dir={tmp_path}/board",
           f"evaluate.source=model,adapter:{adapter}"]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, env=cluster, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    ranks = json.loads((tmp_path / "board" / "leaderboard.json").read_text())
    assert len(ranks) == 2
    (parent,), children = _runs(tmp_path, "leaderboard")
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    # each job ran under slurmd, on the one CPU its sbatch job was given
    assert len({c.data.tags.get("lec.slurm_job_id") for c in children}) == 2
    for child in children:
        config = (Path(child.data.tags["lec.run_dir"]) / "config.yaml").read_text()
        assert "num_threads: 1" in config


def test_a_two_job_training_sweep_through_sbatch(cluster, tmp_path):
    cmd = [sys.executable, "-m", "lec", "-m", "hydra/launcher=slurm_cpu", "experiment=ci_small",
           f"outputs_dir={tmp_path}", f"hydra.sweep.dir={tmp_path}/sweep", "adapter.r=4,8"]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, env=cluster, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("lec").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["lec.sweep.overrides"] for r in children) == ["adapter.r=4,experiment=ci_small",
                                                                           "adapter.r=8,experiment=ci_small"]
    assert sorted(r.data.params["train.lora.r"] for r in children) == ["4", "8"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert all(r.data.tags.get("lec.slurm_job_id", "").isdigit() for r in children)  # each ran as an sbatch job
