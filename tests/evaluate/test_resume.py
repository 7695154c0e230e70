"""An evaluation killed mid-suite (kill -9) and started again re-asks no request it has an answer for, and finishes
with the numbers of an uninterrupted one: HELM's request cache, keyed by the served model's identity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lec.evaluate import helm

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _cmd(tmp: Path, name: str, cache: str) -> list:
    return [sys.executable, "-m", "lec.evaluate", f"outputs_dir={tmp}", f"eval.cache_dir={tmp / cache}",
            f"hydra.run.dir={tmp / name}"]  # fmt: skip


def _key(request: dict) -> str:
    """A request as one string; scenario_state.json leaves out the fields that are null in the cache's key."""
    return json.dumps({k: v for k, v in request.items() if v is not None}, sort_keys=True)


def _answered(cache: Path) -> set:
    """The requests in HELM's request cache (lec.evaluate.helm.answered_requests, what lec logs at a start)."""
    return {_key(json.loads(k)) for k in helm.answered_requests(cache / "requests")}


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "eval_metrics.json").read_text())["metrics"]


def _comparable(run_dir: Path) -> dict:
    """The metrics two runs of one model share: not timings, not sam_sum (HELM samples it at temperature 0.3 and
    sends no seed, so any two runs differ); logprobs differ in the 7th digit with how requests were batched and
    which prefixes the cache held; an answer that differs moves a mean by ≥ 1/40."""
    return {f"{label}/{scenario}/{metric}": value for label, scenarios in _metrics(run_dir).items()
            for scenario, metrics in scenarios.items() if scenario != "sam_sum"
            for metric, value in metrics.items() if "inference_runtime" not in metric}  # fmt: skip


def asked(helm_dir: Path, skip: frozenset = frozenset()) -> set:
    """Requests HELM sent to the server (not from its cache) in the runs under `helm_dir` other than those restored
    (`skip`). Two threads may send one request at once before either answer is cached: a set, not a count."""
    found = set()
    for state in helm_dir.glob("runs/*/*/scenario_state.json"):
        if state.parent.name not in skip:
            found |= {_key(s["request"]) for s in json.loads(state.read_text())["request_states"]
                      if not s["result"]["cached"]}  # fmt: skip
    return found


def test_killed_and_started_again_asks_only_what_was_not_answered(tmp_path):
    full = subprocess.run(_cmd(tmp_path, "full", "c1"), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-4000:]
    distinct = _answered(tmp_path / "c1")
    assert len(distinct) > 100

    proc = subprocess.Popen(_cmd(tmp_path, "cut", "c2"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(_answered(tmp_path / "c2")) < len(distinct) // 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the evaluation ended before it could be killed mid-suite"
    os.kill(proc.pid, signal.SIGKILL)  # its server and helm-run die with it (PR_SET_PDEATHSIG)
    proc.wait()
    time.sleep(3)  # helm-run's last writes, if any, land before the count
    answered = _answered(tmp_path / "c2")
    assert 0 < len(answered) < len(distinct)
    kept = {p.name for p in (tmp_path / "c2" / "runs").glob("*/*") if p.is_dir()}  # finished before the kill

    again = subprocess.run(_cmd(tmp_path, "again", "c2"), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    again_asked = asked(tmp_path / "again" / "helm", frozenset(kept))
    assert again_asked and not again_asked & answered  # nothing answered before the kill is asked again …
    assert again_asked | answered == _answered(tmp_path / "c2") == distinct  # … and everything else is
    assert _comparable(tmp_path / "again") == pytest.approx(_comparable(tmp_path / "full"), rel=1e-4, abs=1e-6)
