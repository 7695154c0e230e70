"""Start the lec server as a real process on 127.0.0.1, wait until it answers, stop it (and its children) after."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import requests

from lec import procs
from lec import standby as lec_standby


class ServerError(RuntimeError):
    """The server process died or never answered; the message carries the tail of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class ServerSpec:
    """One model to serve: the run's resolved config, its weights, and where its log goes."""

    params: Path
    log_path: Path
    base: Optional[Path] = None
    adapter: Optional[Path] = None
    name: str = "lec"
    host: str = "127.0.0.1"
    port: Optional[int] = None
    threads: Optional[int] = None  # torch threads of this server process


SERVE = [sys.executable, "-m", "lec.serve"]


def standby(log_path: Path) -> contextlib.AbstractContextManager:
    """A server interpreter that imports the serving stack (~11 s of CPU, most of a server's start-up) while the run
    does other work; the block's first `start` hands it what to serve (lec/standby.py)."""
    return lec_standby.ready("server", "lec.serve.__main__:main", ("peft", "transformers.modeling_utils"), log_path)


def start(spec: ServerSpec) -> Tuple[subprocess.Popen, str]:
    """Start `python -m lec.serve` for one model (the standby one if it waits); returns the process and its base URL
    (not yet ready)."""
    port = spec.port or free_port(spec.host)
    args: List[str] = ["--params", str(spec.params), "--name", spec.name]
    args += (["--base", str(spec.base)] if spec.base else []) + (["--adapter", str(spec.adapter)] if spec.adapter else [])
    args += [f"serve.host={spec.host}", f"serve.port={port}"]
    if spec.threads:
        args.append(f"hardware.num_threads={spec.threads}")  # torch.set_num_threads in the server (lec/serve/load.py)
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = lec_standby.hand("server", args, spec.log_path)
    if proc is None:
        env = dict(os.environ)
        if spec.threads:
            env["OMP_NUM_THREADS"] = str(spec.threads)
        with spec.log_path.open("w") as log:  # dies with lec, even on kill -9
            proc = procs.start([*SERVE, *args], stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, f"http://{spec.host}:{port}"


@contextlib.contextmanager
def serving(specs: List[ServerSpec], timeout_s: float = 180.0) -> Iterator[List[str]]:
    """Start every server at once (they load in parallel), wait until all answer, stop all on exit."""
    started: List[Tuple[subprocess.Popen, str]] = []
    try:
        for spec in specs:
            started.append(start(spec))
        for (proc, url), spec in zip(started, specs):
            wait_ready(url, proc, spec.log_path, timeout_s)
        yield [url for _, url in started]
    finally:
        procs.stop([proc for proc, _ in started])  # all at once: a stop takes one grace period, not one per server


def wait_ready(url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"model server exited with code {proc.returncode}:\n{tail(log_path)}")
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise ServerError(f"model server did not answer {url}/health within {timeout_s:.0f} s:\n{tail(log_path)}")


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the server's process group, SIGKILL after `grace_s`."""
    procs.stop([proc], grace_s)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
