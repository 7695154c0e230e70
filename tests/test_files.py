"""lec/files.py: whole-or-nothing writes, one line for a full disk, one live process per run dir."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from lec import files


def test_atomic_write_leaves_the_old_file_when_the_block_fails(tmp_path):
    target = tmp_path / "train.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with files.atomic(target, "the rows") as f:
            f.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["train.jsonl"]


def test_atomic_dir_replaces_the_whole_dir_or_nothing(tmp_path):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "old.bin").write_text("old")
    with pytest.raises(KeyError):
        with files.atomic_dir(out, "the adapter") as tmp:
            (tmp / "new.bin").write_text("half")
            raise KeyError("boom")
    assert sorted(os.listdir(tmp_path)) == ["adapter"] and os.listdir(out) == ["old.bin"]
    with files.atomic_dir(out, "the adapter") as tmp:
        (tmp / "new.bin").write_text("new")
    assert sorted(os.listdir(tmp_path)) == ["adapter"] and os.listdir(out) == ["new.bin"]


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_partial_file(tmpfs):
    full_disk = tmpfs("64k")
    target = full_disk / "data" / "train.jsonl"
    with pytest.raises(files.WriteError) as err:
        with files.atomic(target, "the curated rows (train.jsonl)") as f:
            for _ in range(1000):
                f.write("x" * 1024)
    msg = str(err.value)
    assert "\n" not in msg and "the curated rows (train.jsonl)" in msg and str(full_disk) in msg
    assert os.strerror(errno.ENOSPC) in msg
    assert list((full_disk / "data").iterdir()) == []  # no train.jsonl, no .partial-… left


def test_an_unwritable_dir_fails_the_check_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(files.WriteError, match="could not write outputs_dir to .*a-file"):
        files.check_writable(blocker / "outputs", "outputs_dir")


def test_a_run_dir_held_by_a_live_process_is_refused_and_free_again_once_it_exits(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from lec import files
        with files.claim({str(tmp_path)!r}, "the run dir"):
            print("held", flush=True)
            sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(files.InUse, match=f"in use by a running lec \\(pid {holder.pid} on "):
        with files.claim(tmp_path, "the run dir"):
            pass
    holder.kill()  # no cleanup runs: the kernel drops the lock
    holder.wait()
    with files.claim(tmp_path, "the run dir"):
        pass
