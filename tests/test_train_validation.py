"""val/loss on the held-out rows, early stopping, and the best checkpoint as the run's adapter (also across a
resume): the Validation callback with a scripted model, then real tiny-model training."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lec import config, plan
from lec.train.budget import STATE, complete_checkpoints
from lec.train.finetune import LossLog, Validation
from tests.test_train_budget import FAST, _run_dir


class Scripted(torch.nn.Module):
    """A model whose loss on the validation rows follows a script; save_pretrained writes which check it was."""

    def __init__(self, losses):
        super().__init__()
        self.losses, self.calls = list(losses), 0

    def forward(self, **batch):
        return SimpleNamespace(loss=torch.tensor(self.losses[self.calls]))

    @property
    def device(self):
        return torch.device("cpu")

    def save_pretrained(self, path):
        (Path(path) / "weights.txt").write_text(str(self.calls))

    def next_check(self):
        self.calls += 1


def _validation(tmp_path, every=2, patience=None, before=None):
    rows = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}]  # one micro-batch: one forward per check
    from lec.train.packing import collate

    log = LossLog(tmp_path / "log.jsonl", None)
    tok = SimpleNamespace(save_pretrained=lambda p: None)
    return Validation(rows, collate(0), 8, every, patience, tmp_path / "best", log, tok, before or {})


def _steps(v, model, steps, max_steps=100):
    control = SimpleNamespace(should_training_stop=False, should_save=False)
    for step in steps:
        v.on_step_end(None, SimpleNamespace(global_step=step, max_steps=max_steps), control, model=model)
        if v.checked_at == step:
            model.next_check()
        if control.should_training_stop:
            return step, control
    return None, control


def test_checks_every_n_steps_keep_the_lowest_and_stop_after_the_patience(tmp_path):
    model = Scripted([3.0, 2.0, 2.5, 2.6, 1.0])
    v = _validation(tmp_path, every=2, patience=2)
    stopped, control = _steps(v, model, range(1, 20))
    assert stopped == 8 and control.should_save and v.stopped_early  # checks at 2, 4, 6, 8; no new low at 6, 8
    assert (v.best_loss, v.best_step) == (2.0, 4)
    assert (tmp_path / "best" / "weights.txt").read_text() == "1"  # the weights of the second check
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["val/loss"]) for r in logged] == [(2, 3.0), (4, 2.0), (6, 2.5), (8, pytest.approx(2.6))]
    assert v.state() == {"best_val_loss": 2.0, "best_step": 4, "best_dir": str(tmp_path / "best"),
                         "checks_since_best": 2}  # fmt: skip


def test_the_last_step_is_always_checked_and_a_resume_carries_the_best(tmp_path):
    first = _validation(tmp_path, every=10)
    _steps(first, Scripted([2.0]), [1, 2, 3], max_steps=3)  # not a multiple of 10: checked because it is the last
    assert first.best_step == 3
    again = _validation(tmp_path, every=10, before=first.state())
    _steps(again, Scripted([2.5]), [4, 5, 6], max_steps=6)
    assert (again.best_loss, again.best_step) == (2.0, 3)  # 2.5 at step 6 is no better than step 3's
    gone = _validation(tmp_path / "elsewhere", before={**first.state(), "best_dir": str(tmp_path / "missing")})
    assert gone.best_step is None  # best weights lost (a kill between renames): the next check sets the best


def test_no_held_out_rows_is_refused_when_the_best_is_asked_for(tmp_path, tiny_dir):
    from lec.train import finetune

    layout = _run_dir(tmp_path / "run")
    (layout.data / "val.jsonl").write_text("")
    p = plan.build(config.compose(FAST + ["train.max_steps=2"]))
    with pytest.raises(config.ConfigError, match="train.keep_best needs held-out rows"):
        finetune(p.train, p.model, layout, tiny_dir)
    p = plan.build(config.compose(FAST + ["train.max_steps=2", "train.keep_best=false"]))
    assert finetune(p.train, p.model, layout, tiny_dir).best_val_loss is None  # trained, without val/loss


@pytest.mark.e2e  # 40 training steps with 20 validation passes
def test_the_run_adapter_is_the_best_weights_not_the_last(tmp_path, tiny_dir):
    """At this rate the held-out sums ("Add a and 7") are fit best near step 30 and get worse after (measured:
    val/loss 2.295 at 30, 2.320 at 40), so the adapter is an earlier step's weights, not the last."""
    from lec.train import finetune

    layout = _run_dir(tmp_path / "run")
    p = plan.build(config.compose(FAST + ["train.eval_every_steps=2", "train.save_every_steps=40", "adapter.lr=3e-2",
                                          "train.max_steps=40"]))  # fmt: skip
    result = finetune(p.train, p.model, layout, tiny_dir)
    val = _val(layout)
    assert sorted(val) == list(range(2, 41, 2))
    assert result.adapter_step == min(val, key=val.get) < 40 and result.best_val_loss == pytest.approx(min(val.values()))
    adapter, best, last = (_weights(d) for d in (result.adapter_dir, layout.checkpoints / "best",
                                                 layout.checkpoints / "checkpoint-40"))  # fmt: skip
    assert all(torch.equal(adapter[k], best[k]) for k in adapter)
    assert not all(torch.equal(adapter[k], last[k]) for k in adapter)  # not the last step's weights


@pytest.mark.e2e  # two trainings, 20 steps with 10 validation passes
def test_a_resume_keeps_the_best_so_far(tmp_path, tiny_dir):
    from lec.train import finetune

    layout = _run_dir(tmp_path / "run")
    common = FAST + ["train.eval_every_steps=2", "train.save_every_steps=10", "train.resume_from=auto",
                     "adapter.lr=3e-2"]  # fmt: skip
    first = finetune(*_plan(common + ["train.max_steps=10"]), layout, tiny_dir)
    (ckpt,) = complete_checkpoints(layout.checkpoints)
    state = json.loads((ckpt / STATE).read_text())
    assert state["best_val_loss"] == pytest.approx(first.best_val_loss) and state["best_step"] == first.adapter_step
    second = finetune(*_plan(common + ["train.max_steps=20"]), layout, tiny_dir)
    val = _val(layout)  # both runs' checks: the log is kept on a resume
    assert sorted(val) == list(range(2, 21, 2))
    assert second.adapter_step == min(val, key=val.get) and second.best_val_loss == pytest.approx(min(val.values()))


def _plan(overrides):
    p = plan.build(config.compose(overrides))
    return p.train, p.model


def _val(layout) -> dict:
    return {r["step"]: r["val/loss"] for r in map(json.loads, layout.train_log.read_text().splitlines())
            if "val/loss" in r}  # fmt: skip


def _weights(d: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(d / "adapter_model.safetensors"))
