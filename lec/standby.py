"""Standby interpreters: a child started early that imports what a CLI needs (torch, transformers and peft for the
model server: ~11 s of CPU; HELM and its metrics for helm-run: ~4 s) while the run's main process starts up and
trains, then runs the CLI with the arguments one line of its stdin gives. The evaluation then starts from them
instead of importing after training.

    python -m lec.standby server <run dir>/server-standby.log lec.serve.__main__:main peft transformers.modeling_utils

(the child's side: its name and its log name it in `ps`, by what it stands by for and the run it belongs to.)

The parent's side: `with standby.ready(name, entry, preload, log_path):` starts one for the block; `standby.hand(name,
argv, log)` gives it its arguments and the caller owns the process from then on (None when none waits, or it died:
start the CLI as usual). One that was never handed is stopped when the block ends.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

from lec import procs

_waiting: Dict[str, subprocess.Popen] = {}


@contextlib.contextmanager
def ready(name: str, entry: str, preload: Sequence[str], log_path: Path,
          env: Optional[Dict[str, str]] = None) -> Iterator[None]:  # fmt: skip
    """A standby for `entry` ("module:function") that has imported `preload`, waiting under `name` for the block."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:  # what it prints while importing; its job's output goes to the job's log
        proc = procs.start([sys.executable, "-m", "lec.standby", name, str(log_path), entry, *preload],
                           stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    _waiting[name] = proc
    try:
        yield
    finally:
        if _waiting.get(name) is proc:
            del _waiting[name]
            procs.stop([proc], grace_s=2.0)


def hand(name: str, argv: List[str], log_path: Path) -> Optional[subprocess.Popen]:
    """The standby `name`, running its CLI with `argv` (output to `log_path`); None if there is none alive."""
    proc = _waiting.pop(name, None)
    if proc is None:
        return None
    try:
        proc.stdin.write((json.dumps({"argv": argv, "log": str(log_path)}) + "\n").encode())
        proc.stdin.close()
    except OSError:  # it died (BrokenPipeError): the caller starts the CLI itself
        procs.stop([proc], grace_s=0.0)
        return None
    return proc


def main() -> None:
    _name, _log, entry, *preload = sys.argv[1:]
    module, function = entry.split(":")
    run = getattr(importlib.import_module(module), function)
    for name in preload:
        importlib.import_module(name)
    line = sys.stdin.readline()
    if not line.strip():  # let go unused
        return
    job = json.loads(line)
    fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.argv = [module, *job["argv"]]
    sys.exit(run())


if __name__ == "__main__":
    main()
