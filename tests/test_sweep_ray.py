"""`hydra/launcher=ray_cluster` (conf/hydra/launcher/ray_cluster.yaml) on a local one-machine Ray: 2 jobs as Ray tasks,
children of one parent; and a 2-model leaderboard of `python -m lec.evaluate -m` the same way. hydra-ray-launcher is optional (it pins ray<3 and cloudpickle<3, which lec does not want in its
own venv), so this test runs only where it is importable, e.g. with an overlay:
`pip install --target /tmp/ray hydra-ray-launcher==1.2.2; PYTHONPATH=/tmp/ray pytest tests/test_sweep_ray.py`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.sweep_helpers import ROOT, lec_multirun, runs

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_ray_launcher_runs_jobs_as_children_of_one_parent(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="hydra-ray-launcher is an optional install")
    out = lec_multirun(tmp_path, "hydra/launcher=ray_cluster", "hydra.launcher.ray.init.address=null",
                       "hydra.launcher.ray.remote.num_gpus=0", "hydra.launcher.ray.remote.num_cpus=1", "adapter.r=4,8")  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    _, (parent,), children = runs(tmp_path)
    assert parent.info.status == "FINISHED" and parent.data.tags["lec.sweep.launcher"] == "ray_cluster"
    assert len(children) == 2 and {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert len({c.data.tags["lec.pid"] for c in children} | {parent.data.tags["lec.pid"]}) == 3


def test_ray_launcher_evaluates_two_models_into_one_leaderboard(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="hydra-ray-launcher is an optional install")
    from tests.test_slurm import _adapter

    adapter = _adapter(tmp_path)
    cmd = [sys.executable, "-m", "lec.evaluate", "-m", "hydra/launcher=ray_cluster", "experiment=ci_small",
           "hydra.launcher.ray.init.address=null", "hydra.launcher.ray.remote.num_gpus=0",
           "hydra.launcher.ray.remote.num_cpus=1", f"outputs_dir={tmp_path}", f"hydra.sweep.dir={tmp_path}/board",
           f"evaluate.source=model,adapter:{adapter}"]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    assert len(json.loads((tmp_path / "board" / "leaderboard.json").read_text())) == 2
    _, (parent,), children = runs(tmp_path)
    assert parent.data.tags["lec.kind"] == "leaderboard" and parent.info.status == "FINISHED"
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    assert len({c.data.tags["lec.pid"] for c in children} | {parent.data.tags["lec.pid"]}) == 3  # Ray workers
