"""dvc.yaml end to end in a temporary git repo: `dvc repro` runs the default pipeline; a second `dvc repro` does
nothing; an eval-only param change re-runs only evaluate and score; `dvc exp run -S …` (DVC's own Hydra
composition) makes an experiment whose metrics `dvc exp show` lists and whose MLflow runs carry its name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# small settings (the embedded default otherwise): a few steps, two scenarios, a handful of instances, no base eval
SMALL = """# @package _global_
# CI-sized embedded default for the DVC test. `python -m lec.stages params experiment=dvc_small`
train: {max_steps: 12}
eval:
  entries: ["mmlu:subject=number_order,model={model}", "gsm:model={model}"]
  max_eval_instances: 4
  eval_base: false
  synthetic: {closed: [], n_eval: 4}
"""


def _sh(repo: Path, *cmd: str, timeout: int = 400, stdout_only: bool = False) -> str:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # `python` and `dvc` of this venv
    out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-4000:]}\n{out.stderr[-6000:]}"
    return out.stdout if stdout_only else out.stdout + out.stderr


def _ran(log: str) -> set:
    return {s for s in ("curate", "finetune", "evaluate", "score") if f"Running stage '{s}'" in log}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("dvcrepo")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("lec", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / d, repo / d, ignore=ignore)
    for f in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / f, repo / f)
    (repo / "conf" / "experiment").mkdir(exist_ok=True)
    (repo / "conf" / "experiment" / "dvc_small.yaml").write_text(SMALL)
    _sh(repo, "git", "init", "-q")
    _sh(repo, "dvc", "init", "-q")
    _sh(repo, "dvc", "config", "hydra.enabled", "True")
    _sh(repo, sys.executable, "-m", "lec.stages", "params", "experiment=dvc_small")
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return repo


def test_repro_runs_everything_then_nothing(repo):
    log = _sh(repo, "dvc", "repro")
    assert _ran(log) == {"curate", "finetune", "evaluate", "score"}
    out = repo / "outputs" / "pipeline"
    assert (out / "data" / "train.jsonl").exists() and (out / "adapter" / "adapter_config.json").exists()
    score = json.loads((out / "score.json").read_text())
    assert "tuned/score_open" in score and "tuned/rank" in score
    report = json.loads((out / "data" / "curation_report.json").read_text())
    assert report["decontam"]["available"] and [s["step"] for s in report["steps"]][-1] == "decontam"
    assert (out / "train_loss.csv").read_text().startswith("step,loss\n")
    assert _ran(_sh(repo, "dvc", "repro")) == set()  # nothing changed: nothing runs


def test_eval_only_change_reruns_only_evaluate_and_score(repo):
    _sh(repo, sys.executable, "-m", "lec.stages", "params", "experiment=dvc_small", "eval.max_eval_instances=3")
    assert _ran(_sh(repo, "dvc", "repro")) == {"evaluate", "score"}
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "eval 3")


def test_exp_run_with_set_params_is_listed_with_metrics(repo):
    log = _sh(repo, "dvc", "exp", "run", "-S", "experiment=dvc_small", "-S", "eval.max_eval_instances=3",
              "-S", "adapter.r=8")  # fmt: skip
    assert _ran(log) == {"finetune", "evaluate", "score"}  # adapter.r is not a curate param
    shown = json.loads(_sh(repo, "dvc", "exp", "show", "--json", stdout_only=True))
    exps = [e for b in shown for e in (b.get("experiments") or [])]
    assert exps, shown
    exp = exps[0]
    name = exp["name"]
    data = exp["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["adapter"]["r"] == 8
    assert "tuned/score_open" in data["metrics"]["outputs/pipeline/score.json"]["data"]
    client = MlflowClient(f"sqlite:///{repo}/outputs/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("lec").experiment_id],
                              filter_string=f"tags.`lec.dvc.exp_name` = '{name}'")  # fmt: skip
    assert {r.data.tags["lec.dvc.stage"] for r in runs} == {"finetune", "evaluate", "score"}
    assert all(r.info.status == "FINISHED" and r.info.run_name.startswith(f"{name}/") for r in runs)
    tuned = [r for r in runs if r.data.tags["lec.dvc.stage"] == "finetune"][0]
    assert tuned.data.params["adapter.r"] == "8"
