"""A 2-job sweep through `hydra/launcher=submitit_local` (each job its own process, found its parent through the sweep
dir), then the MLflow UI's server on that SQLite store: its REST API shows the parent/child runs, params, metrics and
the comparison plots (what a person sees after `mlflow ui`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import requests

from lec.serve.process import free_port
from tests.proc_helpers import wait_healthy
from tests.sweep_helpers import lec_multirun, runs

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("submitit")
    out = lec_multirun(tmp, "hydra/launcher=submitit_local", "adapter.r=4,8")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return tmp


def test_jobs_ran_in_their_own_processes_as_children_of_one_parent(sweep):
    _, (parent,), children = runs(sweep)
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    pids = {c.data.tags["lec.pid"] for c in children}
    assert len(pids) == 2 and parent.data.tags["lec.pid"] not in pids
    assert parent.data.tags["lec.sweep.launcher"] == "submitit_local"
    assert parent.info.status == "FINISHED" and parent.data.tags["lec.sweep.failed"] == "0"
    assert (sweep / "sweep" / ".submitit").is_dir()
    cores = len(os.sched_getaffinity(0))  # the 2 jobs ran at once and split the cores (lec.config.cpu_threads)
    assert {c.data.params["train.num_threads"] for c in children} == {str(max(1, min(2, cores // 2)))}


@pytest.fixture(scope="module")
def server(sweep):
    port = free_port()
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    cmd = [mlflow, "server", "--backend-store-uri", f"sqlite:///{sweep}/mlflow.db", "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]  # fmt: skip
    log = (sweep / "mlflow-server.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, 90, "mlflow server", sweep / "mlflow-server.log")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers: the group this test started
        proc.wait(30)
        log.close()


def _api(url: str, endpoint: str, **params):
    r = requests.get(f"{url}/api/2.0/mlflow/{endpoint}", params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_mlflow_server_shows_parent_children_params_metrics_and_plots(server):
    exp = _api(server, "experiments/get-by-name", experiment_name="lec")["experiment"]
    r = requests.post(f"{server}/api/2.0/mlflow/runs/search", json={"experiment_ids": [exp["experiment_id"]]},
                      timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    found = r.json()["runs"]
    tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in found]
    (parent,) = [run for run, t in zip(found, tags) if t.get("lec.sweep.role") == "parent"]
    pid = parent["info"]["run_id"]
    children = [run for run, t in zip(found, tags) if t.get("mlflow.parentRunId") == pid]
    assert len(children) == 2  # the UI nests runs under the parent by this tag
    for child in children:
        params = {p["key"]: p["value"] for p in child["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in child["data"]["metrics"]}
        assert params["train.lora.r"] in ("4", "8") and "challenge/score_open" in metrics  # adapter.r, in the plan
        hist = _api(server, "metrics/get-history", run_id=child["info"]["run_id"], metric_key="train/loss")
        assert len(hist["metrics"]) == 20  # one point per step: the UI's loss chart
    pmetrics = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
    assert pmetrics["sweep/n_jobs"] == 2 and pmetrics["sweep/n_failed"] == 0
    listed = {f["path"] for f in _api(server, "artifacts/list", run_id=pid, path="compare")["files"]}
    assert {"compare/objective.png", "compare/scenarios.png", "compare/loss.png", "compare/index.html"} <= listed
    png = requests.get(f"{server}/get-artifact", params={"path": "compare/objective.png", "run_uuid": pid}, timeout=30)
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
