"""Sources are cited as users can open them (a repo path at a commit, a URL), never as the developers' research notes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the notes lec was researched from live outside the repository; a citation of them leads a user nowhere
PRIVATE = re.compile(r"\.\./shared|shared/research|\b(?:helm_challenge|winners_data|stack|stack_install|peers)\.md\b")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    return [ROOT / p for p in out.stdout.decode().split("\0") if p and not p.startswith("tests/")]


def test_no_tracked_file_outside_tests_cites_the_private_research_notes():
    files = tracked_files()
    assert any(p.name == "README.md" for p in files) and any(p.suffix == ".yaml" for p in files)
    hits = []
    for path in files:
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        hits += [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
                 if PRIVATE.search(line)]  # fmt: skip
    assert not hits, "cite the public source instead:\n" + "\n".join(hits)


def test_the_pattern_catches_what_it_must():
    assert PRIVATE.search("# Sources: ../shared/research/winners_data.md §7.1")
    assert PRIVATE.search("(stack.md §1.2)") and PRIVATE.search("helm_challenge.md §5.2")
    assert not PRIVATE.search("on a filesystem shared with the compute nodes") and not PRIVATE.search("README.md")
