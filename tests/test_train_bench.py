"""Benchmark curves during training (train.bench_every_steps, eval.bench): the callback's cadence with a scripted
scorer (step 0 on a fresh run only, every N, the end), the group means and the gap, the compose-time refusals, and
the curves of a real tiny-model training scored by lm-eval in-process, drawn by lec.compare."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from lec import compare, config, plan
from lec.train.bench import Bench, curves
from tests.test_train_budget import FAST, _run_dir

GROUPS = {"open": ("mmlu_a", "mmlu_b"), "closed": ("c2c",)}


def test_group_means_and_the_gap():
    got = curves({"mmlu_a": {"acc": 0.5, "acc_norm": 0.4}, "mmlu_b": {"acc": 0.9}, "c2c": {"acc": 0.25}}, GROUPS)
    assert got == pytest.approx({
        "bench/mmlu_a/acc": 0.5, "bench/mmlu_a/acc_norm": 0.4, "bench/mmlu_b/acc": 0.9, "bench/c2c/acc": 0.25,
        "bench/open/acc": 0.7, "bench/open/acc_norm": 0.4,  # a mean over the tasks that have the metric
        "bench/closed/acc": 0.25,
        "bench/open_minus_closed/acc": 0.45,  # acc_norm has no closed-stage value: no gap for it
    })  # fmt: skip
    only_open = curves({"mmlu_a": {"acc": 0.5}}, {"open": ("mmlu_a",), "closed": ()})
    assert only_open == {"bench/mmlu_a/acc": 0.5, "bench/open/acc": 0.5}  # one stage: no gap


class Model:
    """What the callback hands the scorer: a model whose mode the scorer may change (and must restore)."""

    training = True


def _bench(every=3):
    checks = []

    def score(model):
        checks.append(model)
        return {"mmlu_a": {"acc": 0.25 * len(checks)}, "c2c": {"acc": 0.5}}

    written = []
    return Bench(score, GROUPS, every, lambda m, step: written.append((step, m))), written


def _train(bench, steps, max_steps, start=0, stop_at=None):
    """The Trainer's callback events of a run from global step `start` (0: fresh; more: resumed) to `stop_at`."""
    model, control = Model(), SimpleNamespace(should_training_stop=False)
    bench.on_train_begin(None, SimpleNamespace(global_step=start, max_steps=max_steps), control, model=model)
    last = start
    for step in steps:
        if stop_at is not None and step > stop_at:
            break
        bench.on_step_end(None, SimpleNamespace(global_step=step, max_steps=max_steps), control, model=model)
        last = step
    bench.on_train_end(None, SimpleNamespace(global_step=last, max_steps=max_steps), control, model=model)


def test_checks_at_step_0_every_n_steps_and_at_the_end():
    bench, written = _bench(every=3)
    _train(bench, range(1, 8), max_steps=7)
    assert [step for step, _ in written] == [0, 3, 6, 7]
    assert [m["bench/mmlu_a/acc"] for _, m in written] == [0.25, 0.5, 0.75, 1.0]  # the score of each check
    assert written[-1][1]["bench/open_minus_closed/acc"] == pytest.approx(0.5)
    assert bench.checks == 4 and bench.seconds >= 0

    stopped, written = _bench(every=3)
    _train(stopped, range(1, 8), max_steps=7, stop_at=5)  # the time budget / early stopping ended it at step 5
    assert [step for step, _ in written] == [0, 3, 5]


def test_a_resumed_run_has_no_second_step_0_point():
    """The step-0 point is the base model's, logged by the run that started from it; a resume starts at its
    checkpoint's step (the Trainer restores global_step before on_train_begin) and checks from there on."""
    bench, written = _bench(every=3)
    _train(bench, range(5, 10), max_steps=9, start=4)
    assert [step for step, _ in written] == [6, 9]


# (overrides, text of the one-line refusal)
REFUSED = [
    (["eval=open_600", "train.bench_every_steps=10"],
     "train.bench_every_steps=10 needs tasks, and eval=open_600 has none in eval.bench.open / eval.bench.closed: set "
     "train.bench_every_steps=null"),
    (["eval.bench.closed=[lec_mmlu_number_order]"], "eval.bench: lec_mmlu_number_order is in both open and closed"),
    (["eval.synthetic=null"], "eval.bench names lec_mmlu_number_order, a task over the smoke suite's generated files"),
    (["eval.bench.closed=[lec_gsm]"], "eval.bench: lec_gsm is a generation task; benchmark curves score multiple-choice"),
    (["eval.synthetic.closed=[sam_sum]"],
     "eval.bench: lec_corr2cause reads files eval=smoke does not generate: add corr2cause to eval.synthetic.closed"),
    (["eval.bench.open=[lec_mmlu_algebra]"], "add algebra to eval.synthetic.mmlu_subjects"),
]  # fmt: skip


@pytest.mark.parametrize("overrides,message", REFUSED, ids=[" ".join(o) for o, _ in REFUSED])
def test_curves_without_runnable_tasks_are_refused_at_compose(overrides, message):
    with pytest.raises(config.ConfigError) as err:
        plan.build(config.compose(overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_on_for_the_embedded_default_off_on_gpu_presets_and_elsewhere():
    default = plan.build(config.compose([])).train.bench
    assert default.every_steps == 100 and default.open == ("lec_mmlu_number_order",)
    assert default.closed == ("lec_corr2cause", "lec_ethics_justice") and default.shots == (("corr2cause", 1),)
    for overrides in (["hardware=rtx4090", "model=mistral7b"], ["eval=open_600"], ["experiment=ci_small"]):
        assert plan.build(config.compose(overrides)).train.bench is None, overrides


@pytest.mark.e2e
def test_training_logs_the_curves(tmp_path, tiny_dir):
    """Two steps of the tiny model with a check after each: lm-eval scores the live model on the smoke suite's
    generated items (2 docs per task) at steps 0, 1 and 2, logged to train_log.jsonl and through on_metrics (MLflow).
    e2e: ~3 s (training, lm-eval's task loading, HELM's adapter import)."""
    from lec.train import finetune

    layout = _run_dir(tmp_path / "run")
    p = plan.build(config.compose(FAST + ["train.max_steps=2", "train.bench_every_steps=1", "eval.bench.limit=2"]))
    logged = []
    result = finetune(p.train, p.model, layout, tiny_dir, on_metrics=lambda m, step: logged.append((step, m)))
    rows = [json.loads(line) for line in layout.train_log.read_text().splitlines()]
    bench = {r["step"]: r for r in rows if "bench/open/acc" in r}
    assert sorted(bench) == [0, 1, 2] and result.bench_seconds > 0
    assert [step for step, m in logged if "bench/open_minus_closed/acc" in m] == [0, 1, 2]  # MLflow's path too
    tasks = ("lec_mmlu_number_order", "lec_corr2cause", "lec_ethics_justice")
    for r in bench.values():
        assert {f"bench/{t}/acc" for t in tasks} | {"bench/closed/acc", "bench/open_minus_closed/acc"} <= set(r)
        assert {r[f"bench/{t}/acc"] for t in tasks} <= {0.0, 0.5, 1.0}  # 2 docs a task
        assert r["bench/open/acc"] == r["bench/lec_mmlu_number_order/acc"]
        assert r["bench/closed/acc"] == pytest.approx((r["bench/lec_corr2cause/acc"] + r["bench/lec_ethics_justice/acc"]) / 2)
        assert r["bench/open_minus_closed/acc"] == pytest.approx(r["bench/open/acc"] - r["bench/closed/acc"])


class Store:
    """The two calls plot_loss makes of an MLflow client, over histories held here (an SQLite store's schema set-up
    alone takes seconds; tests/test_compare.py draws from a real one)."""

    def __init__(self):
        self.history = {}

    def run(self, name, overrides, metrics):
        run_id = f"run{len(self.history)}"
        self.history[run_id] = {}
        for key, step, value in metrics:
            self.history[run_id].setdefault(key, []).append(SimpleNamespace(step=step, value=value))
        latest = {key: points[-1].value for key, points in self.history[run_id].items()}
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id, run_name=name),
                               data=SimpleNamespace(metrics=latest, params={}, tags={"lec.sweep.overrides": overrides}))

    def get_metric_history(self, run_id, key):
        return self.history[run_id].get(key, [])


def test_compare_draws_the_curves_below_the_loss(tmp_path):
    """Two runs, one with benchmark curves: loss.png gains the stage means (open solid, closed dashed) and the gap
    against the same steps, and says so in its own metadata."""
    store = Store()
    runs = []
    for lr, with_bench in (("0.003", True), ("0.001", False)):
        metrics = [("train/loss", step, 3.0 / step**0.5) for step in range(1, 301)]
        for step, (open_, closed) in zip((0, 100, 200, 300), ((0.25, 0.5), (0.6, 0.45), (0.85, 0.5), (0.9, 0.5))):
            if with_bench:
                metrics += [(f"bench/{k}/acc", step, v) for k, v in
                            {"open": open_, "closed": closed, "open_minus_closed": open_ - closed}.items()]  # fmt: skip
        runs.append(store.run("default", f"adapter.lr={lr}", metrics))
    axes = _axes(compare.plot_loss(store, runs, ["adapter.lr"], tmp_path / "loss.png"))
    train, _, groups, gap = axes
    assert train["ylabel"] == "train/loss (moving average)" and train["legend"] == ["lr=0.003", "lr=0.001"]
    assert groups["ylabel"] == "bench/<group>/acc" and groups["legend"] == ["lr=0.003 open", "lr=0.003 closed"]
    assert gap["ylabel"] == "bench/open_minus_closed/acc" and gap["legend"] == [] and gap["xlabel"] == "optimizer step"
    assert "open-stage (solid), closed-stage (dashed)" in groups["title"]
    (only,) = _axes(compare.plot_loss(store, runs[1:], [], tmp_path / "plain.png"))  # no curves: the loss alone
    assert only["ylabel"].startswith("train/loss")


def _axes(png):
    from PIL import Image

    return json.loads(Image.open(png).text["Description"])["lec.axes"]
