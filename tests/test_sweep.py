"""`python -m lec -m …` with Hydra's basic launcher: one MLflow parent per sweep, a child per job, a failing job
recorded and the others going on, a resumed sweep skipping finished jobs, the comparison plots on the parent; and an
Optuna search whose failing trial is told FAIL."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from tests.sweep_helpers import lec_multirun, runs

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """2 × 2 grid; data=lima has no local copy and the hub is offline, so its jobs fail at curation."""
    tmp = tmp_path_factory.mktemp("sweep")
    out = lec_multirun(tmp, "adapter.r=4,8", "data=synthetic,lima")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return tmp, out


def test_one_parent_and_a_child_per_job(sweep):
    tmp, _ = sweep
    _, (parent,), children = runs(tmp)
    assert len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.data.tags["lec.sweep.id"] for c in children} == {parent.data.tags["lec.sweep.id"]}
    assert sorted(c.data.tags["lec.sweep.job"] for c in children) == ["0", "1", "2", "3"]
    for c in children:  # named by their overrides; the tag carries the same string
        ovr = c.data.tags["lec.sweep.overrides"]
        assert c.info.run_name == ovr and "adapter.r=" in ovr and "data=" in ovr
        # params are the job's plan: adapter.r=… is train.lora.r there (the failing jobs log theirs before curation)
        r = ovr.split("adapter.r=")[1].split(",")[0]
        assert c.data.params["train.lora.r"] == r and c.data.params["choice.data"] in ("synthetic", "lima")


def test_failing_jobs_are_failed_children_and_the_others_finish(sweep):
    tmp, _ = sweep
    _, (parent,), children = runs(tmp)
    by_data = {}
    for c in children:
        by_data.setdefault(c.data.params["choice.data"], []).append(c)
    assert {c.info.status for c in by_data["lima"]} == {"FAILED"}
    assert all("GAIR/lima" in c.data.tags["lec.error"] for c in by_data["lima"])
    assert {c.info.status for c in by_data["synthetic"]} == {"FINISHED"}
    assert all(0 < c.data.metrics["sweep/objective"] <= 1 for c in by_data["synthetic"])
    # the parent says how many failed, and is FAILED because some did
    assert parent.info.status == "FAILED"
    assert parent.data.tags["lec.sweep.failed"] == "2" and parent.data.tags["lec.sweep.finished"] == "2"
    assert parent.data.metrics["sweep/n_failed"] == 2 and parent.data.metrics["sweep/n_jobs"] == 4


def test_parent_names_the_best_job_by_the_objective(sweep):
    tmp, _ = sweep
    client, (parent,), children = runs(tmp)
    finished = [c for c in children if c.info.status == "FINISHED"]
    # smoke has no closed stage: the default objective challenge/score_full falls back to challenge/score_open
    top = max(c.data.metrics["challenge/score_open"] for c in finished)
    best = next(c for c in finished if c.info.run_id == parent.data.tags["lec.sweep.best_run_id"])  # ties: either
    assert best.data.metrics["challenge/score_open"] == top == parent.data.metrics["best/challenge/score_full"]
    assert parent.data.tags["lec.sweep.best_overrides"] == best.data.tags["lec.sweep.overrides"]
    assert parent.data.tags["lec.sweep.objective"] == "challenge/score_full"
    assert "4 jobs, 2 finished, 2 failed" in parent.data.tags["mlflow.note.content"]
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"sweep_summary.json", "compare"} <= arts


def test_comparison_plots_are_written_and_logged_to_the_parent(sweep):
    tmp, _ = sweep
    client, (parent,), _ = runs(tmp)
    compare = tmp / "sweep" / "compare"
    for name in ("objective.png", "scenarios.png", "loss.png"):
        assert (compare / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    page = (compare / "index.html").read_text()
    assert page.count("<tr") == 5 and "objective.png" in page and "GAIR/lima" in page
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "compare")}
    assert {"compare/objective.png", "compare/scenarios.png", "compare/loss.png", "compare/index.html"} <= logged
    rows = json.loads((compare / "runs.json").read_text())
    swept = rows[0]["params"]
    assert len(swept) == 2 and "choice.data" in swept  # the fixed small-run overrides are not "swept"
    (rank,) = [k for k in swept if k != "choice.data"]  # adapter.r, shown by whichever param carries it
    assert sorted(row["params"][rank] for row in rows) == ["4", "4", "8", "8"]


def test_jobs_log_one_progress_line_each(sweep):
    tmp, _ = sweep
    lines = [json.loads(x) for x in (tmp / "sweep" / "jobs.jsonl").read_text().splitlines()]
    assert sorted(x["job"] for x in lines) == [0, 1, 2, 3]
    assert sum(x["objective"] is None for x in lines) == 2


def test_resuming_skips_finished_jobs_and_reuses_the_parent(sweep):
    tmp, _ = sweep
    _, (parent,), before = runs(tmp)
    out = lec_multirun(tmp, "adapter.r=4,8", "data=synthetic,lima")  # same command, same sweep dir
    assert out.returncode == 0, out.stderr[-5000:]
    assert (out.stdout + out.stderr).count("finished before in run") == 2
    _, parents, after = runs(tmp)
    assert [p.info.run_id for p in parents] == [parent.info.run_id]  # no second parent
    new = [c for c in after if c.info.run_id not in {b.info.run_id for b in before}]
    assert len(new) == 2 and {c.data.params["choice.data"] for c in new} == {"lima"}  # only the failed ones re-ran
    again = next(p for p in parents)
    assert again.data.tags["lec.sweep.resumed"] == "1" and again.data.tags["lec.sweep.failed"] == "2"
    assert again.info.status == "FAILED"


def test_optuna_search_tells_a_failing_trial_fail(tmp_path):
    """hparams_search through Hydra's Optuna sweeper; a grid over data makes one trial fail for sure."""
    import optuna

    conf = tmp_path / "conf" / "hparams_search"
    conf.mkdir(parents=True)
    (conf / "grid_fail.yaml").write_text(f"""# @package _global_
# test-only: `python -m lec hparams_search=grid_fail`
defaults:
  - override /hydra/sweeper: optuna
  - override /hydra/sweeper/sampler: grid
hydra:
  mode: MULTIRUN
  sweeper:
    direction: ${{sweep.direction}}
    study_name: grid_fail
    storage: sqlite:///{tmp_path}/optuna.db
    n_trials: 2
    n_jobs: 1
    params:
      data: choice(synthetic, lima)
""")
    out = lec_multirun(tmp_path, f"hydra.searchpath=[file://{tmp_path}/conf]", "hparams_search=grid_fail",
                       multirun=False)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    study = optuna.load_study(study_name="grid_fail", storage=f"sqlite:///{tmp_path}/optuna.db")
    states = {t.params["data"]: t.state for t in study.trials}
    assert states == {"synthetic": optuna.trial.TrialState.COMPLETE, "lima": optuna.trial.TrialState.FAIL}
    _, (parent,), children = runs(tmp_path)
    ok = next(c for c in children if c.info.status == "FINISHED")
    assert math.isclose(study.best_value, ok.data.metrics["sweep/objective"])
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert results["best_params"] == {"data": "synthetic"}
    assert parent.data.tags["lec.sweep.sweeper"] == "optuna" and parent.data.params["search.data"]
    assert parent.data.tags["lec.sweep.failed"] == "1"
