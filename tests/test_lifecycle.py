"""Faults against the real pipeline (real server processes, real helm-run, real MLflow): every run ends in a true
state, leaves no process behind, never shares a dir with another run, and a full disk is one line.

Each test runs `python -m lec experiment=ci_small` cut further (2 training steps) in its own outputs dir; the
processes a run started are found by that dir in their command lines (the servers load <run dir>/config.yaml,
helm-run writes <run dir>/helm)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.proc_helpers import children, wait, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["experiment=ci_small", "train.max_steps=2"]
BOTH = ["eval.eval_base=true"]  # two servers, tuned and base: both must be stopped
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _start(tmp: Path, *overrides: str, log_name: str = "lec.log") -> subprocess.Popen:
    log = (tmp / log_name).open("w")
    flags = [o for o in overrides if o.startswith("-")]  # -m before the overrides, as a user types it
    cmd = [sys.executable, "-m", "lec", *flags, f"outputs_dir={tmp}", *SMALL, *(o for o in overrides if o not in flags)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


def _wait_for_helm(tmp: Path, lec: subprocess.Popen) -> None:
    """Until the evaluation runs helm-run (its suite's log exists: the standby helm-run, up since the run started,
    has its arguments) with both servers up."""
    wait(lambda: any(tmp.rglob("helm/helm-run-*.log")) or lec.poll() is not None, 300, "helm-run")  # runs/, sweeps/
    assert lec.poll() is None, (tmp / "lec.log").read_text()[-3000:] + lec.stderr.read()[-3000:]
    assert sum("lec.serve" in c for c in children(tmp, lec)) == 2  # tuned + base servers are up


def _runs(tmp: Path):
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    return client.search_runs([client.get_experiment_by_name("lec").experiment_id], order_by=["attributes.start_time"])


def _summary(tmp: Path) -> dict:
    (path,) = tmp.glob("runs/*/summary.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_during_evaluate_stops_every_process_and_marks_the_run_killed(tmp_path, sig):
    lec = _start(tmp_path, *BOTH)
    _wait_for_helm(tmp_path, lec)
    sent = time.monotonic()
    lec.send_signal(sig)
    _, err = lec.communicate(timeout=30)
    wait(lambda: not children(tmp_path, lec), 15 - (time.monotonic() - sent), "the servers and helm-run to stop")
    took = time.monotonic() - sent
    name = signal.Signals(sig).name
    assert lec.returncode == 128 + sig and err.strip().splitlines()[-1].startswith(f"lec: ")
    assert name in err.strip().splitlines()[-1] and "Traceback" not in err
    (run,) = _runs(tmp_path)
    assert run.info.status == "KILLED" and run.data.tags["lec.end"] == f"stopped by {name}"
    assert run.info.end_time is not None
    summary = _summary(tmp_path)
    assert summary["status"] == "KILLED" and summary["end"] == f"stopped by {name}"
    assert took < 15, f"took {took:.1f} s to stop cleanly"


def test_sigterm_to_a_sweep_kills_the_running_child_and_the_parent(tmp_path):
    lec = _start(tmp_path, *BOTH, "-m", "adapter.r=4,8")
    _wait_for_helm(tmp_path, lec)
    lec.send_signal(signal.SIGTERM)
    lec.communicate(timeout=30)
    wait(lambda: not children(tmp_path, lec), 15, "the sweep's servers and helm-run to stop")
    assert lec.returncode == 128 + signal.SIGTERM
    runs = {r.data.tags.get("lec.sweep.role", "child"): r for r in _runs(tmp_path)}
    assert set(runs) == {"parent", "child"}  # the second job never started
    assert runs["child"].info.status == "KILLED" and runs["parent"].info.status == "KILLED"
    assert runs["parent"].data.tags["lec.sweep.interrupted"] == "true"


def test_kill_9_takes_the_children_along_and_the_run_is_found_and_marked(tmp_path):
    lec = _start(tmp_path, *BOTH)
    _wait_for_helm(tmp_path, lec)
    lec.send_signal(signal.SIGKILL)  # nothing of lec's own runs: no finally, no MLflow update
    lec.wait(10)
    wait(lambda: not children(tmp_path, lec), 15, "the children of a SIGKILLed lec to die with it")
    (run,) = _runs(tmp_path)
    assert run.info.status == "RUNNING"  # what MLflow alone would say forever
    out = subprocess.run([sys.executable, "-m", "lec.runs", "--reap", f"outputs_dir={tmp_path}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0 and "1 run(s) marked KILLED" in out.stdout, out.stderr[-2000:]
    (run,) = _runs(tmp_path)
    assert run.info.status == "KILLED" and f"pid {lec.pid}" in run.data.tags["lec.end"]


def test_runs_started_together_get_their_own_dirs_and_records(tmp_path):
    """Two runs at once on a fresh outputs dir (no mlflow.db yet): both finish, each with its own run dir, config,
    summary and adapter, and the MLflow run of each holds its own."""
    lecs = [_start(tmp_path, f"seed={seed}", log_name=f"lec-{seed}.log") for seed in (0, 1)]
    errs = [lec.communicate(timeout=600)[1] for lec in lecs]
    assert [lec.returncode for lec in lecs] == [0, 0], [e[-3000:] for e in errs]
    dirs = sorted(tmp_path.glob("runs/*"))
    runs = _runs(tmp_path)
    assert len(dirs) == 2 and len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["lec.run_dir"] for r in runs} == {str(d) for d in dirs}
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for r in runs:
        run_dir = Path(r.data.tags["lec.run_dir"])
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert str(config["seed"]) == r.data.params["train.seed"]
        assert json.loads((run_dir / "summary.json").read_text())["run_id"] == r.info.run_id
        logged = client.download_artifacts(r.info.run_id, "adapter/adapter_model.safetensors", str(tmp_path / r.info.run_id))
        assert Path(logged).read_bytes() == (run_dir / "adapter" / "adapter_model.safetensors").read_bytes()
    assert len({r.data.params["train.seed"] for r in runs}) == 2


def test_a_second_live_run_in_the_same_dir_is_refused(tmp_path):
    first = _start(tmp_path, f"hydra.run.dir={tmp_path}/run")
    wait(lambda: (tmp_path / "run" / "config.yaml").exists() or first.poll() is not None, 120, "the first run")
    second = subprocess.run([sys.executable, "-m", "lec", f"outputs_dir={tmp_path}", *SMALL,
                             f"hydra.run.dir={tmp_path}/run"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=30)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1].startswith(f"lec: the run dir {tmp_path}/run is in use by a running")


def test_a_full_disk_is_one_line_marks_the_run_failed_and_leaves_no_partial_rows(tmp_path, tmpfs):
    """outputs_dir on a 2 MB disk (the tiny model's 1.45 MB of weights fit, the 0.9 MB of training rows do not); the
    MLflow store elsewhere, writable: the run is FAILED with the line, and no train.jsonl is left to be taken as
    whole."""
    small_disk = tmpfs("2m")
    store = f"sqlite:///{tmp_path}/mlflow.db"
    out = subprocess.run([sys.executable, "-m", "lec", f"outputs_dir={small_disk}", f"mlflow.tracking_uri={store}",
                          *SMALL], cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert last.startswith("lec: could not write the curated rows (train.jsonl) to ") and "No space left" in last
    (data,) = small_disk.glob("runs/*/data")
    assert not [p.name for p in data.iterdir() if p.name.startswith("train.jsonl")]  # neither whole nor partial
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("lec").experiment_id])
    assert run.info.status == "FAILED" and "No space left on device" in run.data.tags["lec.error"]


def test_an_unwritable_outputs_dir_fails_at_once_in_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "lec", f"outputs_dir={tmp_path}/file/outputs"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert out.stderr.startswith(f"lec: could not write outputs_dir (run dirs, mlflow.db) to {tmp_path}/file/outputs")
    assert time.monotonic() - start < 10


def test_a_run_logs_to_a_real_mlflow_server(tmp_path):
    """`mlflow.tracking_uri=http://…`: the way to share one store between machines (SQLite on a network
    filesystem is not safe). The server keeps the artifacts (--artifacts-destination), not lec's outputs dir."""
    from lec.serve.process import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
                               "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server, 120, "mlflow server")
        uri = f"http://127.0.0.1:{port}"
        out = subprocess.run([sys.executable, "-m", "lec", f"outputs_dir={tmp_path}/out", f"mlflow.tracking_uri={uri}",
                              *SMALL], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        client = MlflowClient(uri)
        (run,) = client.search_runs([client.get_experiment_by_name("lec").experiment_id])
        assert run.info.status == "FINISHED" and run.data.metrics["train/final_steps"] == 2
        assert {a.path for a in client.list_artifacts(run.info.run_id, "adapter")} >= {"adapter/adapter_config.json"}
        assert list((tmp_path / "server-artifacts").rglob("adapter_config.json"))  # stored by the server
        assert not (tmp_path / "out" / "mlflow.db").exists() and not (tmp_path / "out" / "mlartifacts").exists()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)



def test_an_eval_budget_that_ends_before_any_helm_run_scores_every_scenario_zero(tmp_path):
    """The challenge's rule at its edge: nothing finished → every higher-is-better metric of every suite scenario is
    0, the run completes (FINISHED, ranked last) and says the budget ran out."""
    out = subprocess.run([sys.executable, "-m", "lec", f"outputs_dir={tmp_path}", *SMALL, "eval.budget_min=0.02"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = _runs(tmp_path)
    assert run.info.status == "FINISHED" and run.data.tags["lec.eval_timed_out"] == "True"
    challenge = {k: v for k, v in run.data.metrics.items() if k.startswith("challenge/") and "/mean/" not in k}
    scenario = {k: v for k, v in challenge.items() if k.split("/")[1].startswith(("mmlu_", "gsm8k_"))}
    assert set(scenario) >= {"challenge/mmlu_em", "challenge/gsm8k_em"} and set(scenario.values()) == {0.0}
    summary = _summary(tmp_path)
    assert summary["eval_timed_out"] is True and summary["status"] == "FINISHED"
    assert summary["standing"]["tuned"]["rank"] == summary["standing"]["tuned"]["of"]


def test_a_run_killed_mid_training_is_marked_and_its_resume_names_it_and_carries_the_time(tmp_path):
    run_dir = tmp_path / "run"
    args = [f"hydra.run.dir={run_dir}", "train.max_steps=60", "train.save_every_steps=10"]
    lec = _start(tmp_path, *args)
    wait(lambda: (run_dir / "checkpoints" / "checkpoint-10").exists() or lec.poll() is not None, 300, "a checkpoint")
    lec.send_signal(signal.SIGKILL)
    lec.wait(10)
    (killed,) = _runs(tmp_path)
    resume = subprocess.run([sys.executable, "-m", "lec", f"outputs_dir={tmp_path}", *SMALL, *args,
                             "train.resume_from=auto"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resume.returncode == 0, resume.stderr[-3000:]
    first, second = _runs(tmp_path)
    assert first.info.run_id == killed.info.run_id and first.info.status == "KILLED"  # found when lec started again
    assert second.data.tags["lec.resumed_from_run"] == first.info.run_id
    assert second.data.tags["lec.train.stop_reason"] == "max_steps"
    train = json.loads((run_dir / "train.json").read_text())
    assert train["resumed_from_run"] == first.info.run_id and train["steps"] == 60
    assert train["elapsed_s"] > train["seconds"]  # the killed run's training time is carried, not dropped


def test_sigterm_to_a_submitit_local_sweep_stops_its_job_processes(tmp_path):
    """submitit_local runs each job under a controller that the launcher started: a SIGTERM to the launcher stops
    them too (no job left running, servers and helm-run included), and every run ends KILLED."""
    lec = _start(tmp_path, *BOTH, "-m", "hydra/launcher=submitit_local", "adapter.r=4")
    _wait_for_helm(tmp_path, lec)
    sent = time.monotonic()
    lec.send_signal(signal.SIGTERM)
    lec.communicate(timeout=60)
    wait(lambda: not children(tmp_path, lec), 40 - (time.monotonic() - sent), "the job processes to stop")
    runs = {r.data.tags.get("lec.sweep.role", "child"): r for r in _runs(tmp_path)}
    assert runs["child"].info.status == "KILLED" and runs["child"].data.tags["lec.end"] == "stopped by SIGTERM"
    assert runs["parent"].info.status == "KILLED"


def test_sigterm_to_a_dvc_stage_marks_its_run_killed(tmp_path):
    """`python -m lec.stages` (what dvc.yaml runs): stopped mid-training, its own MLflow run ends KILLED."""
    params = ROOT / "params.yaml"
    stage = [sys.executable, "-m", "lec.stages", "--params", str(params), "--dir", str(tmp_path / "pipeline")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    curate = subprocess.run([*stage[:3], "curate", *stage[3:]], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert curate.returncode == 0, curate.stderr[-3000:]
    lec = subprocess.Popen([*stage[:3], "finetune", *stage[3:]], cwd=tmp_path, env=env, stderr=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, text=True)  # fmt: skip
    wait(lambda: (tmp_path / "pipeline" / "train_log.jsonl").exists() or lec.poll() is not None, 300, "training")
    lec.send_signal(signal.SIGTERM)
    _, err = lec.communicate(timeout=30)
    assert lec.returncode == 128 + signal.SIGTERM and err.strip().splitlines()[-1].startswith("lec: stopped by SIGTERM")
    client = MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("lec").experiment_id])}
    assert runs["workspace/curate"].info.status == "FINISHED"
    assert runs["workspace/finetune"].info.status == "KILLED"
