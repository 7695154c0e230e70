"""lec/track.py: runs end FAILED with their error; outside a sweep a run has no parent; what goes to MLflow."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from lec import config, plan, track


def test_failed_run_records_its_error_and_has_no_parent_outside_a_sweep(tmp_path, mlflow_db):
    p = plan.build(config.compose([f"outputs_dir={tmp_path}"]))
    assert p.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"  # the store under outputs_dir
    with pytest.raises(MemoryError):
        with track.run(p, "boom") as active:
            run_id = active.info.run_id
            raise MemoryError("CUDA out of memory (simulated by the test)")
    run = MlflowClient(p.tracking_uri).get_run(run_id)
    assert run.info.status == "FAILED" and "MemoryError: CUDA out of memory" in run.data.tags["lec.error"]
    assert "mlflow.parentRunId" not in run.data.tags and "lec.sweep.id" not in run.data.tags


def test_batched_metrics_reach_mlflow_in_batches_with_their_steps(tmp_path, mlflow_db, monkeypatch):
    """Inside track.batched_metrics, log_metrics queues; the queue goes to MLflow every `every_s` seconds and at the
    block's end (and on its way out with an error), each metric with the step it was logged at."""
    import mlflow

    calls = []
    real = mlflow.MlflowClient.log_batch
    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", lambda self, run_id, metrics=(), **kw: (
        calls.append(len(metrics)), real(self, run_id, metrics=metrics, **kw))[1])  # fmt: skip
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    with mlflow.start_run() as run:
        with track.batched_metrics(every_s=3600):
            for step in range(1, 301):
                track.log_metrics({"train/loss": 1.0 / step, "train/lr": 0.1}, step)
            assert calls == []  # nothing written yet: one SQLite transaction per step was 12 ms of a CPU run's step
        assert calls == [600]
        with pytest.raises(KeyError):
            with track.batched_metrics(every_s=0):  # every call flushes; the error still leaves with its metrics
                track.log_metrics({"val/loss": 0.5}, 300)
                track.log_metrics({"val/loss": 0.4}, 301)
                raise KeyError("boom")
        track.log_metrics({"after": 1.0})  # outside a block: written at once, as before
    history = MlflowClient().get_metric_history(run.info.run_id, "train/loss")
    assert [h.step for h in history] == list(range(1, 301)) and history[-1].value == pytest.approx(1 / 300)
    assert [h.value for h in MlflowClient().get_metric_history(run.info.run_id, "val/loss")] == [0.5, 0.4]
    assert calls == [600, 1, 1, 1] and track._queue is None


def test_metric_names_are_valid_mlflow_keys():
    assert track.metric_name("MMLU - EM (Robustness)") == "mmlu_em_robustness"
    assert track.metric_name("challenge", "Score_full") == "challenge/score_full"


@pytest.mark.parametrize("adapter, logged", [("lora", {"config.json", "model.safetensors"}), ("full", {"config.json"})])
def test_full_fine_tune_weights_stay_on_disk_not_in_mlflow(tmp_path, adapter, logged, mlflow_db):
    import mlflow

    weights = tmp_path / "adapter"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    (weights / "model.safetensors").write_bytes(b"\0" * 1024)
    p = plan.build(config.compose([f"adapter={adapter}", f"outputs_dir={tmp_path}"]))
    mlflow.set_tracking_uri(p.tracking_uri)
    with mlflow.start_run() as run:
        track._log_weights(p.train.method, weights)
    client = track.client(p.tracking_uri)
    assert {f.path.split("/")[-1] for f in client.list_artifacts(run.info.run_id, "adapter")} == logged
    assert client.get_run(run.info.run_id).data.tags["lec.weights_dir"] == str(weights.resolve())


@pytest.mark.e2e  # a fresh interpreter importing MLflow, killed with SIGKILL
def test_a_run_whose_process_died_is_marked_killed_when_the_store_is_next_opened(tmp_path, mlflow_db):
    """kill -9 (no finally runs): the run stays RUNNING until lec next opens the store, which finds its pid gone."""
    import signal
    import subprocess
    import sys
    import textwrap

    p = plan.build(config.compose([f"outputs_dir={tmp_path}"]))
    victim = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from lec import config, plan, track
        p = plan.build(config.compose(["outputs_dir={tmp_path}"]))
        with track.run(p, "victim") as active:
            print(active.info.run_id, flush=True)
            time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    run_id = victim.stdout.readline().strip()
    c = MlflowClient(p.tracking_uri)
    exp = c.get_run(run_id).info.experiment_id
    assert track.reap(p.tracking_uri, exp) == [] and c.get_run(run_id).info.status == "RUNNING"  # alive: left alone
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    track.experiment_id(p.tracking_uri, p.experiment, p.outputs_dir)  # what every lec start does
    run = c.get_run(run_id)
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert f"pid {victim.pid}" in run.data.tags["lec.end"] and "lec.end_found_by" in run.data.tags


def test_a_reused_pid_is_not_taken_for_the_run_s_process():
    import os

    tags = track.process_tags()
    assert track.is_alive(tags) is True
    assert track.is_alive({**tags, "lec.pid_start": "1"}) is False  # same pid, another process start time
    assert track.is_alive({**tags, "lec.host": "another-host"}) is None  # cannot tell from here
    assert tags["lec.pid"] == str(os.getpid())


def test_runs_on_other_hosts_are_reaped_only_by_a_stale_heartbeat(tmp_path, mlflow_db):
    import time

    p = plan.build(config.compose([f"outputs_dir={tmp_path}"]))
    exp = track.experiment_id(p.tracking_uri, p.experiment, p.outputs_dir)
    c = MlflowClient(p.tracking_uri)
    tags = {"lec.host": "node-7", "lec.pid": "123", "lec.heartbeat": f"{time.time() - 600:.0f}"}
    old = c.create_run(exp, tags=tags).info.run_id
    fresh = c.create_run(exp, tags={**tags, "lec.heartbeat": f"{time.time():.0f}"}).info.run_id
    assert track.reap(p.tracking_uri, exp) == []  # by default only this host's dead pids
    assert [r.info.run_id for r in track.reap(p.tracking_uri, exp, stale_after_s=300)] == [old]
    assert c.get_run(old).info.status == "KILLED" and c.get_run(fresh).info.status == "RUNNING"


def test_a_signal_marks_the_run_killed_and_an_error_failed_with_its_line(tmp_path, mlflow_db):
    from lec import procs

    p = plan.build(config.compose([f"outputs_dir={tmp_path}"]))
    c = MlflowClient(p.tracking_uri)
    for err, status, end in [(procs.Stopped(15), "KILLED", "stopped by SIGTERM"),
                             (KeyboardInterrupt(), "KILLED", "stopped by SIGINT"),
                             (OSError(28, "No space left on device"), "FAILED", "OSError: [Errno 28] No space left")]:
        with pytest.raises(type(err)):
            with track.run(p, "r") as active:
                raise err
        run = c.get_run(active.info.run_id)
        assert run.info.status == status and run.data.tags["lec.end"].startswith(end)
        assert ("lec.error" in run.data.tags) == (status == "FAILED")


@pytest.mark.e2e  # four fresh interpreters importing MLflow at once: 35 s on 2 cores
def test_concurrent_first_starts_on_a_fresh_store_all_succeed(tmp_path):
    """Several processes open a store that does not exist yet: the schema is created once, every one gets the
    same experiment (MLflow's SQLite migration is not safe to run concurrently; lec serialises it)."""
    import subprocess
    import sys

    code = ("import sys; from lec import track; "
            f"print(track.experiment_id('sqlite:///{tmp_path}/mlflow.db', 'lec', '{tmp_path}'))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]  # fmt: skip
    results = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1


def test_freeze_lists_what_pip_freeze_lists_without_starting_pip():
    """environment/pip_freeze.txt: every installed distribution as name==version, sorted, read in-process (pip's own
    start is 1.5 s of every run); lec itself, installed editable by scripts/setup.sh, as `-e <its checkout>`."""
    from importlib.metadata import version
    from pathlib import Path

    lines = track.freeze().splitlines()
    assert f"mlflow=={version('mlflow')}" in lines and f"torch=={version('torch')}" in lines
    assert f"-e {Path(__file__).resolve().parents[1]}" in lines
    names = [line.split("==")[0].lower() for line in lines if "==" in line]
    assert names == sorted(names) and len(names) == len(set(names)) > 100
