"""The README's cheap commands run verbatim: compose (`--cfg job`), `--plan`, `--help`, the scorer and the memory
pre-flight in its bash blocks, and each `$ command → what it prints` example of the error messages. A command with a
placeholder (`<run>`, a user's own path) is left to the tests of that feature."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CHEAP = ("--cfg job", "--plan", "--help", "python -m lec.score ", "python -m lec.preflight ")
PLACEHOLDERS = ("<", "/home/me", "my_leaderboard", "/models/", "/data/")


def bash_commands() -> list:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [c for c in lines if c.startswith("python -m lec") and any(k in c for k in CHEAP)
            and not any(p in c for p in PLACEHOLDERS)]  # fmt: skip


def examples() -> list:
    """`$ python -m lec … → expected text` lines (`…` stands for text left out)."""
    out = []
    for line in README.splitlines():
        m = re.match(r"\$ (python -m lec[^→]*?)\s+→ (.*)$", line)
        if m:
            out.append((m.group(1).strip(), m.group(2).strip()))
    return out


def _run(command: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")  # `python` = this venv's
    return subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_the_readme_has_commands_to_check():
    assert len(bash_commands()) >= 5 and len(examples()) >= 5


# a process of these imports torch + transformers (13 s of CPU): in the fast set their module's main() runs in this
# process (where they are imported already), the process itself in the e2e set
HEAVY = ("python -m lec.preflight ",)


@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.e2e) if c.startswith(HEAVY) else c
                                     for c in bash_commands()])  # fmt: skip
def test_readme_command_runs_as_written(command):
    out = _run(command)
    assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    assert out.stdout.strip(), command


@pytest.mark.parametrize("command", [c for c in bash_commands() if c.startswith(HEAVY)])
def test_readme_command_runs_as_written_in_this_process(command, capsys):
    import importlib
    import shlex

    _, _, module, *argv = shlex.split(command)
    code = importlib.import_module(module).main(argv)
    out = capsys.readouterr()
    assert code == 0, f"{command}\n{out.out[-2000:]}\n{out.err[-3000:]}"
    assert out.out.strip(), command


@pytest.mark.parametrize("command,expected", examples())
def test_readme_example_prints_what_it_says(command, expected):
    out = _run(command)
    text = out.stdout + out.stderr
    if "--help" not in command:
        assert out.returncode == 2, f"{command}: exit {out.returncode}\n{text[-2000:]}"
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr  # one line
    for part in (p.strip() for p in expected.split("…")):
        if part:
            assert part in text, f"{command}: {part!r} not in\n{text[-2000:]}"
