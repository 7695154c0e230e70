"""Benchmark curves during training: the live model scored on the eval suite's bench tasks (eval.bench) at step 0 (the
base model, before any update; a fresh run only), every `train.bench_every_steps` optimizer steps and at the end,
logged like the loss: `bench/<task>/<metric>`, each stage's mean `bench/open/<metric>` and `bench/closed/<metric>`,
and their gap `bench/open_minus_closed/<metric>` (the challenge's open-vs-closed gap, as training moves it).

The scorer (lec/evaluate/bench.py: lm-evaluation-harness in-process) is any `score(model) → {task: {metric: value}}`.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Optional, Tuple

from transformers import TrainerCallback

log = logging.getLogger(__name__)
Score = Callable[[object], Dict[str, Dict[str, float]]]


def curves(metrics: Dict[str, Dict[str, float]], groups: Dict[str, Tuple[str, ...]]) -> Dict[str, float]:
    """{task: {metric: v}} → the logged keys: bench/<task>/<metric>, bench/<group>/<metric> (the mean over the group's
    tasks that have the metric) and, with both groups, bench/open_minus_closed/<metric>."""
    out = {f"bench/{task}/{m}": v for task, values in metrics.items() for m, v in values.items()}
    means: Dict[str, Dict[str, float]] = {}
    for group, tasks in groups.items():
        per_metric: Dict[str, list] = {}
        for task in tasks:
            for m, v in metrics.get(task, {}).items():
                per_metric.setdefault(m, []).append(v)
        means[group] = {m: sum(vs) / len(vs) for m, vs in per_metric.items()}
        out.update({f"bench/{group}/{m}": v for m, v in means[group].items()})
    if {"open", "closed"} <= set(means):
        out.update({f"bench/open_minus_closed/{m}": v - means["closed"][m] for m, v in means["open"].items()
                    if m in means["closed"]})  # fmt: skip
    return out


class Bench(TrainerCallback):
    """Scores the model being trained at step 0 (fresh runs: `on_train_begin` at global step 0), every `every` steps
    and at the end; writes each check through `write(metrics, step)` (LossLog.write: train_log.jsonl + MLflow).
    `seconds` sums the checks' wall time."""

    def __init__(self, score: Score, groups: Dict[str, Tuple[str, ...]], every: int,
                 write: Callable[[Dict[str, float], int], None]):  # fmt: skip
        self.score, self.groups, self.every, self.write = score, groups, every, write
        self.checked_at: Optional[int] = None
        self.seconds = 0.0
        self.checks = 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:  # the base model; a resumed run had its step-0 point in the run it resumes
            self.check(0, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            self.check(state.global_step, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.checked_at != state.global_step:  # stopped between checks (time budget, early stopping)
            self.check(state.global_step, model)

    def check(self, step: int, model) -> Dict[str, float]:
        start = time.perf_counter()
        values = curves(self.score(model), self.groups)
        took = time.perf_counter() - start
        self.seconds += took
        self.checks += 1
        self.checked_at = step
        self.write(values, step)
        groups = {k.removeprefix("bench/"): v for k, v in values.items()
                  if k.split("/")[1] in ("open", "closed", "open_minus_closed")}  # fmt: skip
        log.info("bench at step %d (%.2f s): %s", step, took,
                 ", ".join(f"{k} {v:.3f}" for k, v in groups.items()))  # fmt: skip
        return values
