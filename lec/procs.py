"""Processes lec starts, and how lec itself stops: every child is stopped on success, error, SIGTERM, SIGINT and
SIGHUP, and dies with lec when lec is killed without a chance to clean up (kill -9, the OOM killer).

- `on_signals()`: SIGTERM and SIGHUP raise `Stopped` in the main thread (as SIGINT raises KeyboardInterrupt), so
  every `finally` and `with` on the way out runs: the servers and `helm-run` are stopped, the MLflow run ends
  KILLED and summary.json says how the run ended.
- `child(cmd)`: a subprocess in its own process group (a Ctrl-C in the terminal reaches lec, which stops it in
  order) that gets SIGTERM from the kernel when lec dies (Linux PR_SET_PDEATHSIG), stopped with its group on exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Resolved before any fork: the child only calls it (no dlopen or locks between fork and exec).
_prctl = getattr(ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True), "prctl", None) \
    if sys.platform.startswith("linux") else None  # fmt: skip


class Stopped(BaseException):
    """lec was asked to stop by a signal (a BaseException like KeyboardInterrupt: `except Exception` lets it pass)."""

    def __init__(self, signum: int):
        self.signal = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signal}")


def end_state(err: Optional[BaseException]) -> tuple:
    """(MLflow status, one-line reason) for how a run body ended: FINISHED, KILLED by a signal, or FAILED."""
    if err is None:
        return "FINISHED", "finished"
    if isinstance(err, Stopped):
        return "KILLED", f"stopped by {err.signal}"
    if isinstance(err, KeyboardInterrupt):
        return "KILLED", "stopped by SIGINT"
    return "FAILED", one_line(err)


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "(no message)"
    return f"{type(err).__name__}: {text}"[:500]


def _raise_stopped(signum, frame) -> None:
    for sig in STOP_SIGNALS:  # the way out must not be cut short by a second signal; a second Ctrl-C still is
        signal.signal(sig, signal.SIG_IGN)
    raise Stopped(signum)


@contextlib.contextmanager
def on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP → `Stopped` in the main thread while the block runs (a no-op off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def install_signal_handlers() -> None:
    """For a process entry point (`python -m lec`, `lec.stages`, a submitit job): for the process's lifetime."""
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, _raise_stopped)


@contextlib.contextmanager
def entry_point() -> Iterator[None]:
    """Around a CLI's body: SIGTERM/SIGHUP stop it like Ctrl-C, and how it stopped is one line on stderr with the
    shell's exit code (128 + the signal; 1 for a file that could not be written) — never a traceback."""
    from lec.files import WriteError

    install_signal_handlers()
    try:
        yield
    except Stopped as err:
        _exit(f"lec: stopped by {err.signal}; every process it started was stopped",
              128 + signal.Signals[err.signal].value)
    except KeyboardInterrupt:
        _exit("lec: interrupted (SIGINT); every process it started was stopped", 128 + signal.SIGINT)
    except WriteError as err:
        _exit(f"lec: {err}", 1)


def _exit(message: str, code: int) -> None:
    sys.stderr.write(message + "\n")
    sys.exit(code)


def _die_with_parent(parent_pid: int) -> None:
    """preexec_fn: the kernel sends SIGTERM when lec's thread that started the child exits, however it exits."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # lec died between fork and prctl: nobody would stop this child
        os._exit(1)


def start(cmd: List[str], **kwargs) -> subprocess.Popen:
    """A child in its own session/process group that dies with lec (see the module doc)."""
    parent = os.getpid()
    return subprocess.Popen(cmd, start_new_session=True, preexec_fn=lambda: _die_with_parent(parent), **kwargs)


def stop(procs: List[subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGTERM each process group at once, SIGKILL what is left after `grace_s`; every process is reaped."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(sig)
        for p in alive:
            try:
                p.wait(wait_s)
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop within %.0f s of SIGTERM: SIGKILL", p.pid, grace_s)
    for p in procs:  # the group's other members (a server's workers) go with it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)


def children(marker: str) -> List[int]:
    """Pids of this process's children whose command line contains `marker` (processes a library started)."""
    me, found = os.getpid(), []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])  # field 4, after the command name
            cmdline = (d / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if ppid == me and marker.encode() in cmdline:
            found.append(int(d.name))
    return found


def stop_pids(pids: List[int], grace_s: float = 10.0) -> None:
    """`stop` for children this process did not start through `start` (no Popen): SIGTERM, SIGKILL after
    `grace_s`, each reaped."""
    alive = set(pids)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while alive and time.monotonic() < deadline:
            for pid in list(alive):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        alive.discard(pid)
                except ChildProcessError:  # reaped elsewhere (its Popen), or not ours
                    alive.discard(pid)
            time.sleep(0.05)


@contextlib.contextmanager
def child(cmd: List[str], grace_s: float = 10.0, **kwargs) -> Iterator[subprocess.Popen]:
    """`with child(cmd) as proc:` — started by `start`, stopped with its group by `stop` however the block ends."""
    with stopping(start(cmd, **kwargs), grace_s) as proc:
        yield proc


@contextlib.contextmanager
def stopping(proc: subprocess.Popen, grace_s: float = 10.0) -> Iterator[subprocess.Popen]:
    """`with stopping(proc):` — a child already started (by `start`, or a standby handed its job, lec/standby.py),
    stopped with its group by `stop` however the block ends."""
    try:
        yield proc
    finally:
        stop([proc], grace_s)
