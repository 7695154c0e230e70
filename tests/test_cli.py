"""`python -m lec` as users meet it: `--help` names lec and its usage; a bad value fails with one line (run, --cfg, -m)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lec import config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def lec(*args: str, tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m lec` with outputs (MLflow store, run dirs) kept out of the checkout."""
    cmd = [sys.executable, "-m", "lec", *args, f"outputs_dir={tmp_path}"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def test_help_names_lec_shows_the_readme_usage_then_every_group(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lec", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("lec: ") and "__main__" not in text and "powered by Hydra" not in text
    assert "usage: python -m lec [group=option ...] [key=value ...]" in text
    usage = [line for line in text.splitlines() if line.startswith("python -m lec")]
    assert len(usage) >= 5
    for line in usage:  # each example is a command the README documents, so the two cannot drift apart
        command = line.split("  #")[0].strip()
        assert command in README, f"--help shows `{command}`, which README.md does not"
    groups = text.index("== Config groups")
    assert all(text.index(line) < groups for line in usage)  # usage above the groups
    for group in [*config.GROUPS, "experiment", "hparams_search"]:
        options = ", ".join(sorted(p.stem for p in (config.CONF_DIR / group).glob("*.yaml")))
        assert f"\n{group}: {options}\n" in text[groups:], group


BAD_VALUES = [  # (override, what the one line must name: the key, the value and what is allowed)
    ("model=mistral8b", ["model=mistral8b", "no such option", "gemma2_9b, hf, llama2_7b, llama31_8b, mistral7b"]),
    ("adapter.r=abc", ["adapter.r=abc", "'abc'", "Integer"]),
    ("adapter.kind=lorax", ["adapter.kind=lorax", "[lora, qlora, full]"]),
    ("experiment=birbl", ["experiment=birbl", "birbal, ci_small, percent_bfd"]),  # optional group: Hydra alone ignores it
]
MODES = {"run": [], "cfg": ["--cfg", "job"], "sweep": ["-m", "seed=0,1"]}


def check(*args: str, tmp_path: Path, capsys) -> tuple:
    """What `python -m lec <args>` does before Hydra starts (lec.__main__.check_command_line: every one-line config
    error comes from there, in a run, under --cfg and before a sweep), in this process: (exit code, stderr).
    0 = the command line passed and Hydra would run it. tests/test_readme.py and the real-process tests below run
    the same check in a `python -m lec` process."""
    from lec import __main__ as cli

    try:
        cli.check_command_line([*args, f"outputs_dir={tmp_path}"])
        code = 0
    except SystemExit as exit:
        code = exit.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("override,named", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_value_fails_with_one_line(override, named, mode, tmp_path, capsys):
    code, err = check(override, *MODES[mode], tmp_path=tmp_path, capsys=capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("lec: invalid config: "), err
    for part in named:
        assert part in lines[0], (part, lines[0])


@pytest.mark.parametrize("mode", MODES)
def test_a_lec_process_exits_2_with_the_line_before_anything_starts(mode, tmp_path):
    """The real process, once per mode: exit code 2, the one line on stderr and no traceback, no run or sweep dir
    (what runs after the check is Hydra's; the in-process test above covers every bad value)."""
    out = lec("adapter.r=abc", *MODES[mode], tmp_path=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == (
        "lec: invalid config: adapter.r=abc: Value 'abc' of type 'str' could not be converted to Integer")
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "runs").exists()  # nothing started


def test_each_swept_value_is_checked_before_the_first_job(tmp_path, capsys):
    code, err = check("-m", "adapter.r=4,8,abc", tmp_path=tmp_path, capsys=capsys)
    assert code == 2 and err.strip() == (
        "lec: invalid config: adapter.r=abc: Value 'abc' of type 'str' could not be converted to Integer"
    )


def test_a_sweep_without_multirun_says_to_add_it(tmp_path, capsys):
    code, err = check("adapter.r=4,8", tmp_path=tmp_path, capsys=capsys)
    assert code == 2 and err.strip() == (
        "lec: invalid config: adapter.r=4,8: a sweep; add -m (--multirun) to run one job per value"
    )


def test_a_config_no_job_can_run_fails_before_the_sweep_starts(tmp_path, capsys):
    code, err = check("-m", "adapter=qlora", "adapter.r=4,8", tmp_path=tmp_path, capsys=capsys)  # qlora, cpu preset
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "adapter=qlora needs a CUDA GPU" in err


def test_a_good_command_line_passes_the_check(tmp_path, capsys):
    assert check("adapter.r=8", "--cfg", "job", tmp_path=tmp_path, capsys=capsys) == (0, "")
    assert check("-m", "adapter.r=4,8", tmp_path=tmp_path, capsys=capsys) == (0, "")


def test_hydra_full_error_still_gives_the_traceback(tmp_path, monkeypatch):
    """HYDRA_FULL_ERROR=1: the check raises Hydra's own error (Python prints its traceback) instead of one line."""
    from hydra.errors import HydraException

    from lec import __main__ as cli

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises((config.ConfigError, HydraException), match="mistral7b"):
        cli.check_command_line(["model=mistral8b", f"outputs_dir={tmp_path}"])
