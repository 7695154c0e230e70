"""The wall-clock budget and atomic, resumable checkpoints.

Checkpoints: the Trainer writes `checkpoint-N` under `<checkpoints>/.partial/`; only when it has finished (optimizer,
scheduler, RNG and trainer state all on disk) lec adds `lec_state.json` (elapsed seconds) and renames the directory
into `<checkpoints>/`. A rename within one filesystem is atomic, so a kill -9 at any moment leaves either the previous
complete checkpoints or the new one, never a half-written `checkpoint-N` that resume would pick.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

from transformers import TrainerCallback

log = logging.getLogger(__name__)
PARTIAL = ".partial"  # where the Trainer writes; never read by resume
STATE = "lec_state.json"  # written last, inside the checkpoint, before the rename


def is_complete(checkpoint: Path) -> bool:
    """Both state files are written last, so a checkpoint holding them is whole."""
    return (checkpoint / STATE).exists() and (checkpoint / "trainer_state.json").exists()


def complete_checkpoints(root: Path) -> list:
    """Complete checkpoints under `root`, oldest first."""
    found = [p for p in root.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit() and is_complete(p)]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def find_resume(resume_from: Optional[str], default_root: Path) -> Optional[Path]:
    """The checkpoint to resume from: `auto` = the newest complete one under this run's checkpoints (or none);
    a checkpoint directory; or a checkpoints directory (its newest complete one)."""
    if resume_from is None:
        return None
    if resume_from == "auto":
        found = complete_checkpoints(default_root) if default_root.exists() else []
        return found[-1] if found else None
    path = Path(resume_from)
    if is_complete(path):
        return path
    found = complete_checkpoints(path) if path.is_dir() else []
    if not found:
        raise FileNotFoundError(
            f"train.resume_from={resume_from}: no complete checkpoint there (a checkpoint-N directory with {STATE}); "
            "pass a run's checkpoints/ directory, one checkpoint-N in it, or auto"
        )
    return found[-1]


def state_of(checkpoint: Optional[Path]) -> dict:
    """What lec wrote with `checkpoint`: elapsed_s (training seconds spent so far, carried across resumes),
    global_step, run_id (the MLflow run that wrote it), stopped_by_budget and the best val/loss so far (best_val_loss,
    best_step, best_dir, checks_since_best); {} for a fresh run."""
    return {} if checkpoint is None else json.loads((checkpoint / STATE).read_text())


class TimeBudget(TrainerCallback):
    """Stops training before `budget_s` of training time (carried across resumes) and saves a checkpoint.

    After every optimizer step it predicts when the next step and a checkpoint write would end (the slowest of the
    last 5 steps — the first one, with its one-off warm-up, only until there are others — and the slowest save so
    far); if that would pass the budget it asks the Trainer to save and stop now.
    """

    def __init__(self, budget_s: float, elapsed_before: float = 0.0, clock: Callable[[], float] = time.monotonic):
        self.budget_s, self.elapsed_before, self.clock = budget_s, elapsed_before, clock
        self.start = self.last = clock()
        self.end: Optional[float] = None
        self.steps: list = []  # seconds per optimizer step
        self.save_s = 0.0
        self.stopped = False

    def elapsed(self) -> float:
        return self.elapsed_before + (self.end if self.end is not None else self.clock()) - self.start

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = self.last = self.clock()
        self.end = None

    def on_train_end(self, args, state, control, **kwargs):
        self.end = self.clock()

    def on_step_end(self, args, state, control, **kwargs):
        now = self.clock()
        self.steps.append(now - self.last)
        self.last = now
        next_step = max(self.steps[1:][-5:] or self.steps)
        if self.elapsed() + next_step + self.save_s >= self.budget_s and not control.should_training_stop:
            log.warning("time budget: %.0f s of %.0f s used at step %d; saving a checkpoint and stopping",
                        self.elapsed(), self.budget_s, state.global_step)  # fmt: skip
            self.stopped = True
            control.should_training_stop = True
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        self.save_s = max(self.save_s, self.clock() - self.last)  # measured from the end of the step
        self.last = self.clock()


class AtomicCheckpoints(TrainerCallback):
    """Moves each checkpoint the Trainer finished writing under `.partial/` into `root/` in one rename, with the
    elapsed training time; keeps the newest `keep` complete ones."""

    def __init__(self, root: Path, budget: TimeBudget, keep: int, run_id: Optional[str] = None,
                 extra: Callable[[], dict] = dict):  # fmt: skip
        self.root, self.budget, self.keep, self.run_id, self.extra = root, budget, max(1, keep), run_id, extra
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.root / PARTIAL, ignore_errors=True)  # leftovers of a killed write

    @property
    def partial(self) -> Path:
        return self.root / PARTIAL

    def on_save(self, args, state, control, **kwargs):
        src = self.partial / f"checkpoint-{state.global_step}"
        (src / STATE).write_text(json.dumps({"elapsed_s": self.budget.elapsed(), "global_step": state.global_step,
                                             "run_id": self.run_id, "stopped_by_budget": self.budget.stopped,
                                             **self.extra()}))  # the best val/loss so far (finetune.Validation)
        dst = self.root / src.name
        if dst.exists():  # the same step saved again (e.g. a resume that stopped at once): keep the new one
            old = self.root / f"{PARTIAL}-old-{src.name}"
            os.rename(dst, old)
            shutil.rmtree(old)
        os.rename(src, dst)  # atomic: dst appears complete or not at all
        for stale in complete_checkpoints(self.root)[: -self.keep]:
            shutil.rmtree(stale)
        log.info("checkpoint %s (%.0f s of training)", dst, self.budget.elapsed())
