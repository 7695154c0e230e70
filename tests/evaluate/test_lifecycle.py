"""`python -m lec.evaluate` under attack: a signal mid-suite stops its server and helm-run and ends the run KILLED;
two evaluations of one model at once, sharing one request cache, both finish with their own dirs and equal numbers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.evaluate.test_resume import _comparable
from tests.proc_helpers import children, wait

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _start(tmp: Path, *overrides: str, log: str = "eval.log") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lec.evaluate", f"outputs_dir={tmp}", f"eval.cache_dir={tmp / 'cache'}", *overrides]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=(tmp / log).open("w"), stderr=subprocess.PIPE, text=True)


def _runs(tmp: Path):
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    return client.search_runs([client.get_experiment_by_name("lec").experiment_id])


def test_sigterm_mid_suite_stops_the_server_and_helm_and_the_run_is_killed(tmp_path):
    lec = _start(tmp_path)
    wait(lambda: any("helm-run" in c for c in children(tmp_path, lec)) or lec.poll() is not None, 300, "helm-run")
    assert lec.poll() is None, lec.stderr.read()[-3000:]
    assert any("lec.serve" in c for c in children(tmp_path, lec))
    sent = time.monotonic()
    lec.send_signal(signal.SIGTERM)
    _, err = lec.communicate(timeout=30)
    wait(lambda: not children(tmp_path, lec), 15 - (time.monotonic() - sent), "the server and helm-run to stop")
    last = err.strip().splitlines()[-1]
    assert lec.returncode == 128 + signal.SIGTERM and last.startswith("lec: ") and "SIGTERM" in last, err[-3000:]
    assert "Traceback" not in err
    (run,) = _runs(tmp_path)
    assert run.info.status == "KILLED" and run.data.tags["lec.kind"] == "evaluation"
    assert run.data.tags["lec.end"] == "stopped by SIGTERM" and run.info.end_time is not None
    (summary,) = tmp_path.glob("evaluations/*/summary.json")
    assert json.loads(summary.read_text())["status"] == "KILLED"


def test_two_evaluations_of_one_model_at_once_share_the_cache_and_keep_their_own_records(tmp_path):
    few = ["eval.max_eval_instances=8"]
    lecs = [_start(tmp_path, *few, log=f"eval-{i}.log") for i in range(2)]
    errs = [lec.communicate(timeout=600)[1] for lec in lecs]
    assert [lec.returncode for lec in lecs] == [0, 0], [e[-3000:] for e in errs]
    runs = _runs(tmp_path)
    dirs = sorted(tmp_path.glob("evaluations/*"))
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"} and len(dirs) == 2
    assert {r.data.tags["lec.run_dir"] for r in runs} == {str(d) for d in dirs}
    assert _comparable(dirs[0]) == pytest.approx(_comparable(dirs[1]), rel=1e-4, abs=1e-6)
    alone = subprocess.run([sys.executable, "-m", "lec.evaluate", f"outputs_dir={tmp_path / 'alone'}", *few],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert alone.returncode == 0, alone.stderr[-3000:]
    (own,) = (tmp_path / "alone").glob("evaluations/*")
    assert _comparable(own) == pytest.approx(_comparable(dirs[0]), rel=1e-4, abs=1e-6)  # the cache changed nothing
