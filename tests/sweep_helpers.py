"""Shared by the sweep tests: `python -m lec -m …` into a tmp dir with settings small enough for CI (≈ 20 s a job)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
# 20 optimizer steps (no benchmark curve), one 8-instance MMLU entry, no base-model evaluation: every stage runs for
# real, briefly.
SMALL = [
    "train.max_steps=20",
    "train.bench_every_steps=null",
    'eval.entries=["mmlu:subject=number_order,model={model}"]',
    "eval.synthetic.closed=[]",
    "eval.synthetic.n_eval=8",
    "eval.max_eval_instances=8",
    "eval.eval_base=false",
]


def lec_multirun(tmp: Path, *overrides: str, multirun: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lec", *(["-m"] if multirun else []), f"outputs_dir={tmp}",
           f"hydra.sweep.dir={tmp}/sweep", *SMALL, *overrides]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def runs(tmp: Path):
    """(client, parent runs, child runs) of the tmp store."""
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name("lec")
    all_runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in all_runs if r.data.tags.get("lec.sweep.role") == "parent"]
    children = [r for r in all_runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children
