"""Wall-clock budget, atomic checkpoints and resume with the elapsed time kept (small budgets on CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lec import config, plan
from lec.plan import RunLayout
from lec.train.budget import PARTIAL, STATE, TimeBudget, complete_checkpoints, find_resume

ROWS = [{"instruction": f"Add {a} and {b}.", "input": "", "output": f"{a + b}"} for a in range(20) for b in range(5)]
VAL = [{"instruction": f"Add {a} and 7.", "input": "", "output": f"{a + 7}"} for a in range(8)]  # held out
FAST = ["hardware.micro_batch_size=4", "hardware.max_seq_len=64", "train.logging_steps=1",
        "train.bench_every_steps=null"]  # benchmark curves: tests/test_train_bench.py


def _run_dir(run_dir: Path) -> RunLayout:
    """A run dir holding the curated data/train.jsonl that finetune reads."""
    (run_dir / "data").mkdir(parents=True)
    (run_dir / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (run_dir / "data" / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in VAL))
    return RunLayout.of(str(run_dir.parent), run_dir)


def test_time_budget_stops_before_the_budget_and_asks_for_a_checkpoint():
    now = [0.0]
    budget = TimeBudget(10.0, elapsed_before=4.0, clock=lambda: now[0])
    budget.on_train_begin(None, None, None)
    control = SimpleNamespace(should_training_stop=False, should_save=False)
    for _ in range(3):  # steps of 1 s: 4 + 3 = 7 s used, next step + save would end at 8 s < 10 s
        now[0] += 1.0
        budget.on_step_end(None, SimpleNamespace(global_step=1), control)
    assert not control.should_training_stop
    now[0] += 2.5  # a slow step: 9.5 s used, the next one would pass 10 s
    budget.on_step_end(None, SimpleNamespace(global_step=4), control)
    assert control.should_training_stop and control.should_save and budget.stopped
    assert budget.elapsed() == pytest.approx(9.5)


@pytest.mark.e2e  # trains until an 8 s budget stops it, then resumes
def test_budget_stop_checkpoint_and_resume_keep_the_elapsed_time(tmp_path, tiny_dir):
    from lec.train import finetune

    first_dir = _run_dir(tmp_path / "a")
    p = plan.build(config.compose(FAST + ["train.max_steps=2000", f"hardware.time_budget_h={8 / 3600}"]))
    assert p.train.time_budget_s == pytest.approx(8.0)
    first = finetune(p.train, p.model, first_dir, tiny_dir, run_id="run-a")
    # the stop is predicted from measured step/save times (exactly tested with a fake clock above); on a loaded
    # machine a step can take longer than predicted, so allow one slow step past the budget here
    assert first.stopped_by_budget and 1 < first.steps < 2000 and first.elapsed_s <= 8.0 + 2.0
    assert first.adapter_dir == first_dir.adapter
    assert (first.adapter_dir / "adapter_model.safetensors").exists()  # the pipeline evaluates what it has
    (ckpt,) = complete_checkpoints(first_dir.checkpoints)
    state = json.loads((ckpt / STATE).read_text())
    assert state["global_step"] == first.steps and 0 < state["elapsed_s"] <= 8.0 + 2.0
    assert state["run_id"] == "run-a" and state["stopped_by_budget"] and first.stop_reason == "budget"

    steps = first.steps + 3
    p2 = plan.build(config.compose(FAST + [f"train.max_steps={steps}", f"hardware.time_budget_h={60 / 3600}",
                                           f"train.resume_from={ckpt.parent}"]))  # fmt: skip
    second = finetune(p2.train, p2.model, _run_dir(tmp_path / "b"), tiny_dir)
    assert second.resumed_from == ckpt and second.steps == steps and not second.stopped_by_budget
    assert second.elapsed_s > state["elapsed_s"]  # continued the clock, not restarted
    assert second.elapsed_s - state["elapsed_s"] <= second.seconds
    assert second.resumed_from_run == "run-a" and second.stop_reason == "max_steps"  # names what it continued


def test_resume_ignores_partial_and_incomplete_checkpoints(tmp_path):
    root = tmp_path / "checkpoints"
    for step, complete in [(4, True), (8, True), (12, False)]:
        d = root / f"checkpoint-{step}"
        d.mkdir(parents=True)
        (d / "trainer_state.json").write_text("{}")
        if complete:
            (d / STATE).write_text(json.dumps({"elapsed_s": step, "global_step": step}))
    (root / PARTIAL / "checkpoint-16").mkdir(parents=True)  # a write killed half-way
    assert find_resume("auto", root) == root / "checkpoint-8"
    assert find_resume(str(root), root) == root / "checkpoint-8"
    assert find_resume("auto", tmp_path / "none") is None
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        find_resume(str(tmp_path / "none"), root)


KILLED_RUN = """
import sys, time, json
from pathlib import Path
import transformers
from lec import config, plan
from lec.plan import RunLayout
from lec.train import finetune
orig = transformers.Trainer._save_rng_state
def slow(self, output_dir):  # the third checkpoint's write hangs half-way, until the test kills this process
    orig(self, output_dir)
    if self.state.global_step == 3:
        print("MID-WRITE", flush=True)
        time.sleep(120)
transformers.Trainer._save_rng_state = slow
p = plan.build(config.compose(sys.argv[3:]))
run_dir = Path(sys.argv[1])
finetune(p.train, p.model, RunLayout.of(str(run_dir.parent), run_dir), Path(sys.argv[2]))
"""


@pytest.mark.e2e  # trains in a fresh process, kills it mid-write, resumes
def test_kill_9_mid_checkpoint_write_leaves_the_last_complete_one(tmp_path, tiny_dir):
    layout = _run_dir(tmp_path)
    args = FAST + ["train.max_steps=10", "train.save_every_steps=1", "train.save_total_limit=5", "train.preflight=false"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tmp_path), str(tiny_dir), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        deadline = time.time() + 240
        while time.time() < deadline and "MID-WRITE" not in (proc.stdout.readline() or ""):
            assert proc.poll() is None, "the run ended before its third checkpoint"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    root = layout.checkpoints
    assert root == tmp_path / "checkpoints"
    assert (root / PARTIAL / "checkpoint-3").exists()  # the half-written one, where resume never looks
    assert [p.name for p in complete_checkpoints(root)] == ["checkpoint-1", "checkpoint-2"]
    last = find_resume("auto", root)
    assert last.name == "checkpoint-2" and (last / "adapter_model.safetensors").exists()
    assert (last / "optimizer.pt").exists() and (last / "rng_state.pth").exists()

    from lec.train import finetune

    p = plan.build(config.compose(FAST + ["train.max_steps=4", "train.resume_from=auto"]))
    result = finetune(p.train, p.model, layout, tiny_dir)
    assert result.resumed_from == last and result.steps == 4
    assert not (root / PARTIAL / "checkpoint-3").exists()  # leftovers of the killed write are cleared
