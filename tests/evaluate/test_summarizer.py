"""helm-summarize, started with helm-run and let go when the runs are on disk (lec/evaluate/helm.py summarizer)."""

from __future__ import annotations

import time

import psutil
import pytest

from lec.evaluate import helm

def _summarizers() -> list:
    return [p for p in psutil.Process().children(recursive=True) if "presentation.summarize" in " ".join(p.cmdline())]


def test_with_no_finished_run_it_exits_without_work_and_leaves_no_process(tmp_path):
    with helm.summarizer(tmp_path / "helm", "smoke", tmp_path / "cache") as go:
        assert len(_summarizers()) == 1  # importing while helm-run would run
        go()  # no stats.json: nothing to summarize
    assert _summarizers() == []
    assert not (tmp_path / "helm" / "runs" / "smoke" / "groups").exists()


def test_a_failure_in_the_block_stops_it(tmp_path):
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="helm-run failed"):
        with helm.summarizer(tmp_path / "helm", "smoke", tmp_path / "cache"):
            raise RuntimeError("helm-run failed")
    assert _summarizers() == [] and time.monotonic() - start < 30
