"""Files a later stage or a resume reads are written whole or not at all: into `<name>.partial-<pid>` beside the
target, then renamed over it (atomic within one filesystem). A full disk or an unwritable dir becomes one
`WriteError` line naming the path and what was being written, and leaves no partial file behind. `claim` keeps two
live lec processes out of one run dir."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Optional

# errnos that mean "this path cannot be written", as opposed to a bug: they get one line, not a traceback
UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EFBIG}


class WriteError(RuntimeError):
    """A file could not be written; the message is the one line a user sees."""


class InUse(WriteError):
    """The dir is held by another live lec process."""


def describe(err: OSError, what: str) -> str:
    return f"could not write {what} to {err.filename or '?'}: {err.strerror or err}"


@contextlib.contextmanager
def one_line(what: str, path: Optional[Path] = None, cleanup: Callable[[], Any] = lambda: None) -> Iterator[None]:
    """An unwritable path (full disk, read-only, no permission) inside the block becomes a WriteError naming it and
    `what` was being written; any failure runs `cleanup` first (the partial file goes)."""
    try:
        yield
    except OSError as err:
        with contextlib.suppress(OSError):
            cleanup()
        if err.errno not in UNWRITABLE:
            raise
        err.filename = err.filename or (str(path) if path else None)
        raise WriteError(describe(err, what)) from err
    except BaseException:
        with contextlib.suppress(OSError):
            cleanup()
        raise


@contextlib.contextmanager
def atomic(path: Path, what: str, mode: str = "w") -> Iterator[IO[Any]]:
    """`with atomic(path, "the training rows") as f: f.write(…)` — `path` appears complete when the block ends."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.partial-{os.getpid()}")
    with one_line(what, path, lambda: tmp.unlink(missing_ok=True)):
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open(mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name says they are
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_dir(path: Path, what: str) -> Iterator[Path]:
    """`with atomic_dir(out, "the adapter") as tmp: save(tmp)` — `out` is replaced by the whole new dir at the end."""
    path = Path(path)
    tmp, old = (path.with_name(f"{path.name}.{kind}-{os.getpid()}") for kind in ("partial", "old"))
    shutil.rmtree(tmp, ignore_errors=True)
    with one_line(what, path, lambda: shutil.rmtree(tmp, ignore_errors=True)):
        tmp.mkdir(parents=True)
        yield tmp
        if path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def write_text(path: Path, text: str, what: str) -> None:
    with atomic(path, what) as f:
        f.write(text)


def write_json(path: Path, data: Any, what: str) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False), what)


def check_writable(directory: Path, what: str) -> None:
    """Fail now, in one line, if `directory` cannot be created or written (before any heavy work)."""
    probe = Path(directory) / f".lec-write-test-{os.getpid()}"
    with one_line(what, Path(directory), lambda: probe.unlink(missing_ok=True)):
        Path(directory).mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()


@contextlib.contextmanager
def claim(directory: Path, what: str) -> Iterator[None]:
    """Hold `directory` for this process while the block runs: a second live lec process that tries to use it is
    refused (an flock on `<dir>/.lec.lock`, released by the kernel when the holder exits, however it exits, so a
    resume into the dir of a finished or killed run is allowed)."""
    import fcntl

    check_writable(directory, what)
    with open(Path(directory) / ".lec.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise InUse(f"{what} {directory} is in use by a running lec ({holder}): give this run its own dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {os.uname().nodename}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
