"""The embedded default end to end: `python -m lec` → real training, real server processes, real helm-run and
helm-summarize, a real MLflow SQLite store; assertions read the MLflow run back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _lec(tmp: Path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lec", f"outputs_dir={tmp}", f"hydra.run.dir={tmp}/run", *overrides]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    out = _lec(tmp)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name("lec")
    (run,) = client.search_runs([exp.experiment_id])
    return tmp, out, client, run


def test_run_finishes_and_logs_its_plan(default_run):
    tmp, _, client, run = default_run
    assert run.info.status == "FINISHED" and run.info.run_name == "default"
    p = run.data.params  # the plan: what ran, not what was typed
    assert p["train.hardware"] == "cpu" and p["model.name"] == "tiny" and p["train.method"] == "lora"
    assert p["choice.eval"] == "smoke" and p["train.lora.r"] == "16"
    assert p["train.lr"] == "0.003"  # the tiny model's tuned rate (conf/recipe/tiny_lora.yaml), not adapter=lora's
    assert int(p["train.steps"]) > 0  # epochs → optimizer steps, known after curation
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(tmp / "mlartifacts")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"plan", "config", "adapter", "helm", "curation"} <= artifacts
    adapter = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= adapter


def test_loss_is_logged_per_step_and_falls(default_run):
    _, _, client, run = default_run
    hist = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(hist) > 100 and sorted(h.step for h in hist) == [h.step for h in sorted(hist, key=lambda h: h.step)]
    first = sum(h.value for h in hist[:10]) / 10
    last = sum(h.value for h in hist[-10:]) / 10
    assert last < first / 3


def test_helm_metrics_and_challenge_score_are_logged(default_run):
    tmp, out, _, run = default_run
    m = run.data.metrics
    for key in ("helm/mmlu/exact_match", "helm/gsm/exact_match_indicator", "base/helm/mmlu/exact_match",
                "challenge/mmlu_em", "challenge/gsm8k_em", "challenge/mean/raw_score", "challenge/score_open",
                "challenge/rank", "base/challenge/rank"):  # fmt: skip
        assert key in m, key
    assert m["challenge/mmlu_em"] == m["helm/mmlu/exact_match"]
    # the smoke suite has one entry per scenario kind of both stages, so both stage scores exist
    assert {"challenge/score_open", "challenge/score_hidden", "challenge/score_full"} <= set(m)
    for key in ("helm/sam_sum/rouge_2", "helm/corr2cause/exact_match", "helm/ethics_justice/exact_match_robustness"):
        assert key in m, key
    assert 1 <= m["challenge/rank"] <= 9 and m["challenge/rank"] <= m["base/challenge/rank"]
    assert run.data.tags["lec.score_scenarios"] == "MMLU,GSM8K,sam_sum,corr2cause,ethics"
    runs = list((tmp / "run" / "helm" / "runs" / "smoke").iterdir())
    assert len([r for r in runs if (r / "stats.json").exists()]) == 10  # 5 entries for tuned and base
    assert (tmp / "run" / "helm" / "runs" / "smoke" / "groups").is_dir()  # helm-summarize ran
    assert "mlflow ui --backend-store-uri" in out.stdout


def test_fine_tuning_beats_the_untuned_base(default_run):
    """The proof that the pipeline is real: HELM scores the tuned model strictly higher on every scenario."""
    _, _, _, run = default_run
    m = run.data.metrics
    assert m["helm/mmlu/exact_match"] > m["base/helm/mmlu/exact_match"]
    assert m["helm/mmlu/exact_match"] >= 0.8  # the MC rule is learned, not guessed (chance = 0.25)
    assert m["helm/gsm/exact_match_indicator"] > m["base/helm/gsm/exact_match_indicator"]
    assert m["challenge/mean/raw_score"] > m["base/challenge/mean/raw_score"]
    assert m["challenge/score_open"] > m["base/challenge/score_open"]


def test_helm_really_talked_to_the_lec_server(default_run):
    tmp, *_ = default_run
    run_dir = next((tmp / "run" / "helm" / "runs" / "smoke").glob("mmlu*model=lec_tuned*"))
    state = json.loads((run_dir / "scenario_state.json").read_text())
    first = state["request_states"][0]
    assert first["request"]["model_deployment"] == "lec/tuned"
    assert first["result"]["success"] and first["result"]["completions"][0]["text"].strip() in "ABCD"
    prod_env = (tmp / "run" / "helm" / "prod_env" / "model_deployments.yaml").read_text()
    assert "base_url: http://127.0.0.1:" in prod_env


def test_a_missing_data_file_is_refused_before_any_run(tmp_path):
    out = _lec(tmp_path, "data=lima", f"data.sources.0.local_path={tmp_path}/missing.jsonl", timeout=300)
    assert out.returncode == 2
    assert f"data.sources.0.local_path={tmp_path}/missing.jsonl: no such file" in out.stderr
    assert not (tmp_path / "mlflow.db").exists()  # refused by validation: nothing ran, nothing was logged


def test_data_that_cannot_load_marks_the_run_failed(tmp_path):
    out = _lec(tmp_path, "data=lima", timeout=300)  # no local copy and the hub is offline (conftest)
    assert out.returncode != 0
    assert "GAIR/lima" in out.stderr
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("lec").experiment_id])
    assert run.info.status == "FAILED" and "GAIR/lima" in run.data.tags["lec.error"]
