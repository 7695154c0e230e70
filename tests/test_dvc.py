"""The README's DVC commands, verbatim, in a fresh `git clone` of this checkout's files (tracked + not ignored, as they
are on disk now): no `dvc init`, no `dvc config`. `dvc exp run -S experiment=ci_small` runs the pipeline; `dvc repro`
then runs nothing; an eval-only experiment re-runs only evaluate and score and keeps every one of its -S overrides;
the next experiment starts from conf/ (plus a persistent edit there), never from the last experiment's -S; `dvc exp
show` lists the experiments with metrics, their MLflow runs carry the experiment's name, `dvc plots show` writes HTML."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SMALL = "experiment=ci_small"  # conf/experiment/ci_small.yaml: 12 steps, two scenarios × 4 instances, no base eval
NAMES: dict = {}  # experiment names, filled in order by the tests below


def _sh(repo: Path, *cmd: str, timeout: int = 600, stdout_only: bool = False) -> str:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # `python` and `dvc` of this venv
    env["PYTHONPATH"] = str(repo)  # the clone's lec, also for the schema DVC's process imports (`pip install -e .`)
    env.pop("MLFLOW_TRACKING_URI", None)  # the stages' own store: sqlite under outputs/
    out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-4000:]}\n{out.stderr[-6000:]}"
    return out.stdout if stdout_only else out.stdout + out.stderr


def _ran(log: str) -> set:
    return {s for s in ("curate", "finetune", "evaluate", "score") if f"Running stage '{s}'" in log}


def _exp_run(repo: Path, *overrides: str) -> tuple:
    """`dvc exp run -S o …` → (experiment name, stages that ran)."""
    log = _sh(repo, "dvc", "exp", "run", *[a for o in overrides for a in ("-S", o)])
    name = re.search(r"Ran experiment\(s\): (\S+)", log)
    assert name, log[-3000:]
    return name.group(1), _ran(log)


def _exp_params(repo: Path, name: str) -> dict:
    """The experiment's params.yaml as `dvc exp show --json` records it."""
    shown = json.loads(_sh(repo, "dvc", "exp", "show", "--json", stdout_only=True))
    revs = [r for b in shown for e in (b.get("experiments") or []) for r in e["revs"] if r["name"] == name]
    assert revs, f"{name} not in dvc exp show: {[b.get('name') for b in shown]}"
    data = revs[0]["data"]
    assert "tuned/score_open" in data["metrics"]["outputs/pipeline/score.json"]["data"]
    return data["params"]["params.yaml"]["data"]


def _mlflow_stages(repo: Path, name: str) -> dict:
    """{stage: MLflow run} of the runs tagged with DVC experiment `name`."""
    client = MlflowClient(f"sqlite:///{repo}/outputs/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("lec").experiment_id],
                              filter_string=f"tags.`lec.dvc.exp_name` = '{name}'")  # fmt: skip
    assert all(r.info.status == "FINISHED" and r.info.run_name.startswith(f"{name}/") for r in runs)
    return {r.data.tags["lec.dvc.stage"]: r for r in runs}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A commit of this checkout's files in a scratch repo, then `git clone` of it: what a user starts from."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")  # fmt: skip
    src = tmp_path_factory.mktemp("origin")
    for f in files:
        if f and (ROOT / f).is_file():  # a tracked file deleted on disk is not copied
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    _sh(src, "git", "init", "-q")
    _sh(src, "git", "add", "-A")
    _sh(src, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "checkout")
    clone = tmp_path_factory.mktemp("clone") / "lec"
    _sh(src, "git", "clone", "-q", str(src), str(clone))
    _sh(clone, "git", "config", "user.name", "t")  # `dvc exp run` commits experiment refs
    _sh(clone, "git", "config", "user.email", "t@t")
    return clone


def test_fresh_clone_is_a_dvc_repo(repo):
    status = json.loads(_sh(repo, "dvc", "status", "--json", stdout_only=True))
    assert set(status) == {"curate", "finetune", "evaluate", "score"}  # nothing run yet
    assert _sh(repo, "git", "status", "--porcelain", stdout_only=True) == ""


def test_exp_run_runs_everything_then_repro_runs_nothing(repo):
    NAMES["small"], ran = _exp_run(repo, SMALL)
    assert ran == {"curate", "finetune", "evaluate", "score"}
    out = repo / "outputs" / "pipeline"
    assert (out / "data" / "train.jsonl").exists() and (out / "adapter" / "adapter_config.json").exists()
    report = json.loads((out / "data" / "curation_report.json").read_text())
    assert report["decontam"]["available"] and [s["step"] for s in report["steps"]][-1] == "decontam"
    assert (out / "train_loss.csv").read_text().startswith("step,loss\n")
    assert json.loads((out / "train.json").read_text())["steps"] == 12  # ci_small reached the stages
    assert set(_mlflow_stages(repo, NAMES["small"])) == {"curate", "finetune", "evaluate", "score"}
    assert _ran(_sh(repo, "dvc", "repro")) == set()  # the workspace holds that experiment: nothing to do


def test_eval_only_exp_reruns_evaluate_and_score_and_keeps_all_overrides(repo):
    NAMES["eval"], ran = _exp_run(repo, SMALL, "eval.max_eval_instances=3", "eval.num_threads=2")
    assert ran == {"evaluate", "score"}
    p = _exp_params(repo, NAMES["eval"])
    assert p["train"]["max_steps"] == 12 and p["eval"]["eval_base"] is False  # from experiment=ci_small
    assert (p["eval"]["max_eval_instances"], p["eval"]["num_threads"]) == (3, 2)  # and both key overrides
    assert set(_mlflow_stages(repo, NAMES["eval"])) == {"evaluate", "score"}


def test_next_exp_starts_from_conf_with_its_persistent_edits_not_from_the_last_exp(repo):
    small = repo / "conf" / "experiment" / "ci_small.yaml"  # a persistent choice, the README way: edit conf/
    small.write_text(small.read_text() + "score:\n  mode: helm\n")
    NAMES["serve"], ran = _exp_run(repo, SMALL, "serve.max_batch_size=4")
    assert ran == {"evaluate", "score"}
    p = _exp_params(repo, NAMES["serve"])
    assert p["serve"]["max_batch_size"] == 4 and p["score"]["mode"] == "helm"
    assert (p["eval"]["max_eval_instances"], p["eval"]["num_threads"]) == (4, 4)  # ci_small / smoke, not exp 2's
    assert _mlflow_stages(repo, NAMES["serve"])["score"].data.tags["lec.score_mode"] == "helm"


def test_exp_show_and_plots_show(repo):
    table = _sh(repo, "dvc", "exp", "show", "--only-changed", stdout_only=True)
    assert all(name in table for name in NAMES.values()), table
    _sh(repo, "dvc", "plots", "show")
    html = (repo / "dvc_plots" / "index.html").read_text()
    assert "train loss" in html and "HELM score per model" in html  # both plots of dvc.yaml
    assert "dvc_plots" not in _sh(repo, "git", "status", "--porcelain", stdout_only=True)  # git-ignored
