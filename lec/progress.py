"""Progress for long work (training steps, helm-run, curation) that reads well both in a terminal and in log files.

In a terminal (stderr is a TTY) of a single run: a tqdm bar. Anywhere else — a sweep (`-m`), a submitit/SLURM job
log, CI, a pipe — a bar would write a carriage-return line per update into the log, so there it is one log line
every `LEC_PROGRESS_EVERY_S` seconds (default 30) with done/total, rate and ETA, plus one at the end.
`LEC_PROGRESS=bar|log|off` forces a mode.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Optional

log = logging.getLogger("lec.progress")


def mode() -> str:
    forced = os.environ.get("LEC_PROGRESS", "").lower()
    if forced in ("bar", "log", "off"):
        return forced
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode is RunMode.MULTIRUN
    return "bar" if sys.stderr.isatty() and not multirun else "log"


def _every_s() -> float:
    return float(os.environ.get("LEC_PROGRESS_EVERY_S", "30"))


def _fmt_s(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 120 else f"{s:.0f} s"


class Progress:
    """`with Progress("finetune", total=400, unit="steps") as p: … p.update()` — a bar or periodic log lines."""

    def __init__(self, desc: str, total: Optional[int] = None, unit: str = "it", every_s: Optional[float] = None):
        self.desc, self.total, self.unit = desc, total, unit
        self.every_s = _every_s() if every_s is None else every_s
        self.mode = mode()
        self.done = 0
        self.start = self.last = time.perf_counter()
        self.bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=f" {unit}", dynamic_ncols=True, leave=False)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            left = f", ETA {_fmt_s(eta)}" if eta != float("inf") else ""
            return (f"{self.desc}: {self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%), "
                    f"{rate:.2f} {self.unit}/s, {_fmt_s(elapsed)} elapsed{left}")  # fmt: skip
        return f"{self.desc}: {self.done} {self.unit}, {rate:.2f} {self.unit}/s, {_fmt_s(elapsed)} elapsed"

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.mode == "log" and time.perf_counter() - self.last >= self.every_s:
            self.last = time.perf_counter()
            log.info(self.line())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.mode != "off":
            log.info(self.line() + " — done")

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def iterate(items: Iterable[Any], desc: str, total: Optional[int] = None, unit: str = "rows") -> Iterator[Any]:
    """Yield from `items`, reporting progress (curation: rows read from a source)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, unit) as p:
        for item in items:
            yield item
            p.update()


def wait(proc: subprocess.Popen, timeout: float, desc: str, status: Callable[[], str],
         tick: Optional[Callable[[], None]] = None, tick_s: float = 2.0) -> int:  # fmt: skip
    """`proc.wait(timeout)` that logs `desc: <status()>, <elapsed> of <budget>` every LEC_PROGRESS_EVERY_S seconds
    (helm-run: how many runs finished) and calls `tick()` every `tick_s` seconds while it waits (helm-run: keep what
    has finished); raises subprocess.TimeoutExpired like proc.wait."""
    start, every = time.perf_counter(), _every_s()
    show = mode() != "off"
    last_log = start
    while True:
        now = time.perf_counter()
        left = timeout - (now - start)
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        try:
            return proc.wait(timeout=min(tick_s if tick else every, every, left))
        except subprocess.TimeoutExpired:
            if tick:
                tick()
            if show and time.perf_counter() - last_log >= every:
                last_log = time.perf_counter()
                log.info("%s: %s, %s of the %s budget", desc, status(), _fmt_s(last_log - start),
                         _fmt_s(timeout))  # fmt: skip


def trainer_callback(desc: str = "finetune"):
    """A transformers TrainerCallback: optimizer steps as a bar (terminal) or periodic log lines (sweeps, logs)."""
    from transformers import TrainerCallback

    class TrainerProgress(TrainerCallback):
        def __init__(self) -> None:
            self.p: Optional[Progress] = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.p = Progress(desc, total=state.max_steps, unit="steps")

        def on_step_end(self, args, state, control, **kwargs):
            if self.p is not None:
                self.p.update(state.global_step - self.p.done)

        def on_train_end(self, args, state, control, **kwargs):
            if self.p is not None:
                self.p.close()
                self.p = None

    return TrainerProgress()
