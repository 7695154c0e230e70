"""lec.compare on a real MLflow SQLite store: runs logged through the MLflow client as a sweep would log them (a
parent, finished and failed children, loss histories), then the plots, the HTML and the parent's artifacts."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from lec import compare, track
from lec.config import SweepConfig

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def store(tmp_path, mlflow_db):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("lec", artifact_location=(tmp_path / "mlartifacts").as_uri())
    parent = client.create_run(exp, run_name="sweep adapter.r=4,8,16 data=synthetic,lima",
                               tags={"lec.sweep.role": "parent", "lec.sweep.objective": "challenge/score_full",
                                     "lec.sweep.direction": "maximize"}).info.run_id  # fmt: skip
    jobs = [("4", "synthetic", 0.40), ("8", "synthetic", 0.55), ("16", "synthetic", 0.50), ("8", "lima", None)]
    for i, (r, data, score) in enumerate(jobs):
        ovr = f"adapter.r={r},data={data},train.max_steps=20"
        run = client.create_run(exp, run_name=ovr, tags={"mlflow.parentRunId": parent, "lec.sweep.job": str(i),
                                                         "lec.sweep.overrides": ovr}).info.run_id  # fmt: skip
        # a job's params are its plan (track.log_plan): adapter.r=… is logged as train.lora.r, data=… as choice.data
        # (and the mixture's own data.* fields)
        params = {"train.lora.r": r, "choice.data": data, "data.name": data, "train.max_steps": "20",
                  "outputs_dir": "/tmp/x"}  # fmt: skip
        client.log_batch(run, params=[Param(k, v) for k, v in params.items()])  # one write, not one per value
        if score is None:
            client.set_tag(run, "lec.error", "DataError: could not load 'GAIR/lima'")
            client.set_terminated(run, "FAILED")
            continue
        now = int(time.time() * 1000)
        metrics = [("challenge/score_open", score, 0), ("challenge/mean/mmlu", score + 0.1, 0),
                   ("challenge/mean/gsm8k", score / 2, 0), ("challenge/mean/raw_score", score, 0)]
        metrics += [("train/loss", 3.0 / (step * float(r) ** 0.1), step) for step in range(1, 21)]
        client.log_batch(run, metrics=[Metric(k, v, now, step) for k, v, step in metrics])
        client.set_terminated(run, "FINISHED")
    return tmp_path, uri, client, parent


def test_sweep_plots_html_and_parent_artifacts(store):
    tmp, uri, client, parent = store
    out = compare.compare_parent(uri, parent, tmp / "compare")
    for name in ("objective.png", "scenarios.png", "loss.png"):
        assert (out / name).read_bytes()[:8] == PNG
    page = (out / "index.html").read_text()
    assert page.count("<tr") == 5 and page.count('class="failed"') == 1 and "GAIR/lima" in page
    rows = json.loads((out / "runs.json").read_text())
    swept = rows[0]["params"]
    assert len(swept) == 2 and "choice.data" in swept  # adapter.r and data were swept; train.max_steps is fixed
    (rank,) = [k for k in swept if k != "choice.data"]
    assert [row["params"][rank] for row in rows] == ["4", "8", "16", "8"]  # each job's LoRA rank, as it ran
    logged = {a.path for a in client.list_artifacts(parent, "compare")}
    assert {"compare/objective.png", "compare/scenarios.png", "compare/loss.png", "compare/index.html"} <= logged


def test_swept_keys_without_sweep_tags_prefer_group_choices(store):
    _, _, client, parent = store
    runs = compare.latest_children(client, client.get_run(parent).info.experiment_id, parent)
    for r in runs:
        r.data.tags.pop("lec.sweep.overrides")  # as runs from separate `python -m lec` calls look
    assert compare.swept_keys(runs) == ["choice.data", "train.lora.r"]  # not data.name: the group choice says it
    assert compare.label(runs[0], ["choice.data", "train.lora.r"]) == "data=synthetic r=4"


def test_latest_attempt_per_job_wins(store):
    """A resumed sweep re-runs a failed job: the comparison shows the new attempt only."""
    _, _, client, parent = store
    exp = client.get_run(parent).info.experiment_id
    ovr = "adapter.r=8,data=lima,train.max_steps=20"
    retry = client.create_run(exp, run_name=ovr, tags={"mlflow.parentRunId": parent, "lec.sweep.job": "3",
                                                       "lec.sweep.overrides": ovr}).info.run_id  # fmt: skip
    client.log_metric(retry, "challenge/score_open", 0.7)
    client.set_terminated(retry, "FINISHED")
    runs = compare.latest_children(client, exp, parent)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert max(track.objective_of(r.data.metrics, SweepConfig()) for r in runs) == 0.7


def _main(*argv: str, capsys) -> tuple:
    """`python -m lec.compare …` in this process: (exit code, stderr)."""
    try:
        code = compare.main(list(argv))
    except SystemExit as exit:  # argparse's error(): usage + one line, exit 2
        code = exit.code
    return code, capsys.readouterr().err


def test_cli_on_a_list_of_runs_and_its_errors(store, capsys):
    tmp, uri, client, parent = store
    ids = [r.info.run_id for r in compare.latest_children(client, client.get_run(parent).info.experiment_id, parent)]
    args = ["--tracking-uri", uri, "--out", str(tmp / "cli")]
    code, err = _main(*args, "--runs", *ids[:3], capsys=capsys)
    assert code == 0, err
    assert (tmp / "cli" / "index.html").exists() and (tmp / "cli" / "loss.png").read_bytes()[:8] == PNG
    code, err = _main(*args, "--runs", "0123456789abcdef", capsys=capsys)
    assert code == 2 and "0123456789abcdef" in err
    code, err = _main(capsys=capsys)
    assert code == 2 and "give a sweep dir" in err


@pytest.mark.e2e
def test_cli_process_exits_2_with_the_usage_error():
    """The real `python -m lec.compare` process (the tests above call its main() in-process)."""
    none = subprocess.run([sys.executable, "-m", "lec.compare"], capture_output=True, text=True, timeout=120)
    assert none.returncode == 2 and "give a sweep dir" in none.stderr and "Traceback" not in none.stderr


def _axes(png):
    from PIL import Image

    return json.loads(Image.open(png).text["Description"])["lec.axes"]


def test_plots_people_read_log_lr_ticks_short_legends_base_bars_and_val_loss(tmp_path, mlflow_db):
    """An lr sweep logged as floats carry them (3e-4 → 0.00030000000000000003), two runs with no overrides, a base
    model and validation loss: each picture says what it shows in readable words (read from its own metadata)."""
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("lec", artifact_location=(tmp_path / "art").as_uri())
    runs = []
    for lr, score in (("0.00010000000000000002", 0.3), ("0.00030000000000000003", 0.5), ("0.0010000000000000002", 0.4)):
        run = client.create_run(exp, run_name="default", tags={"lec.sweep.overrides": f"adapter.lr={lr}"}).info.run_id
        client.log_param(run, "train.lr", lr)
        client.log_metric(run, "challenge/score_open", score)
        client.log_metric(run, "challenge/mean/mmlu", score)
        client.log_metric(run, "untuned/challenge/mean/mmlu", 0.25)
        for step in range(1, 11):
            client.log_metric(run, "train/loss", 3.0 / step, step=step)
        for step in (5, 10):
            client.log_metric(run, "val/loss", 2.0 / step, step=step)
        client.set_terminated(run, "FINISHED")
        runs.append(client.get_run(run))
    objective = SweepConfig(objective="challenge/score_open")
    (obj,) = _axes(compare.plot_objective(runs, ["adapter.lr"], objective, tmp_path / "o.png"))
    assert obj["xscale"] == "log" and obj["xticks"] == ["0.0001", "0.0003", "0.001"] and obj["xlabel"] == "adapter.lr"
    (bars,) = _axes(compare.plot_scenarios(runs, ["adapter.lr"], objective, tmp_path / "s.png"))
    assert bars["legend"] == ["lr=0.0003", "lr=0.001", "lr=0.0001", "base model (untuned)"]  # best first, then base
    train, val = _axes(compare.plot_loss(client, runs, ["adapter.lr"], tmp_path / "l.png"))
    assert (train["ylabel"], val["ylabel"]) == ("train/loss", "val/loss") and val["xlabel"] == "optimizer step"
    assert val["legend"] == ["lr=0.0001", "lr=0.0003", "lr=0.001"]
    for r in runs:
        r.data.tags.pop("lec.sweep.overrides")
    names = compare.labels(runs[:2])  # two runs both named "default": told apart
    assert len(set(names)) == 2 and all(n.startswith("default (") for n in names)
