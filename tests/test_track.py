"""lec/track.py: runs end FAILED with their error; outside a sweep a run has no parent."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from lec import config, track


def test_failed_run_records_its_error_and_has_no_parent_outside_a_sweep(tmp_path):
    cfg = config.compose([f"outputs_dir={tmp_path}"])
    with pytest.raises(MemoryError):
        with track.run(cfg, "boom") as active:
            run_id = active.info.run_id
            raise MemoryError("CUDA out of memory (simulated by the test)")
    run = MlflowClient(track.tracking_uri(cfg)).get_run(run_id)
    assert run.info.status == "FAILED" and "MemoryError: CUDA out of memory" in run.data.tags["lec.error"]
    assert "mlflow.parentRunId" not in run.data.tags and "lec.sweep.id" not in run.data.tags


def test_metric_names_are_valid_mlflow_keys():
    assert track.metric_name("MMLU - EM (Robustness)") == "mmlu_em_robustness"
    assert track.metric_name("challenge", "Score_full") == "challenge/score_full"
