"""One run per zoo file: an exclusive lock held for the whole of a ``generate`` (or a multi-process run).

Two runs on one output would both train every pending model and write over each other. The lock is
an ``flock`` on ``<zoo>.lock`` beside the zoo, taken without waiting: the second run stops at once
with the holder's pid, host and start time, which the holder writes into the lock file. The
operating system drops an ``flock`` when its holder exits, killed or not, so a lock file left by a
killed run never blocks a rerun; a clean exit also removes the file.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import warnings
from pathlib import Path
from typing import Iterator

from .store import ZooFileError

try:
    import fcntl
except ImportError:  # not a POSIX system: runs are not locked
    fcntl = None


def lock_path(path: str | Path) -> Path:
    """The lock file of zoo ``path``: ``<path>.lock`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def holder(path: str | Path) -> dict:
    """What the lock file of zoo ``path`` says about its holder (pid, host, started), {} if nothing."""
    try:
        return json.loads(lock_path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(info: dict) -> str:
    if not info.get("pid"):
        return "a process that has not recorded itself yet"
    return f"pid {info['pid']} on {info.get('host', '?')}, started {info.get('started', '?')}"


def _acquire(path: Path) -> int | None:
    """An open descriptor of the locked lock file of zoo ``path``, or None where files cannot be locked."""
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(10):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = holder(path)
            os.close(fd)
            raise ZooFileError(f"{path}: another run is generating into this file ({_describe(info)}; lock file "
                               f"{lock}). Wait for it to finish, or choose another --out.") from None
        except OSError as e:  # a file system without locks (some network mounts): run, but say so
            os.close(fd)
            warnings.warn(f"{lock}: cannot lock ({e}); nothing stops a second run on {path}", stacklevel=4)
            return None
        # the previous holder removes the file as it lets go: a lock on the inode it removed locks nothing
        try:
            st, mine = os.stat(lock), os.fstat(fd)
            if (st.st_ino, st.st_dev) == (mine.st_ino, mine.st_dev):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise ZooFileError(f"{lock}: could not take the lock: the file kept being replaced")


@contextlib.contextmanager
def hold(path: str | Path) -> Iterator[Path]:
    """Hold the lock of zoo ``path`` for the ``with`` block; raise ZooFileError if another process holds it."""
    path = Path(path)
    lock = lock_path(path)
    fd = _acquire(path) if fcntl is not None else None
    if fd is None:
        yield lock
        return
    try:
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}).encode(), 0)
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # before unlocking: whoever locks next makes a new file (see _acquire)
        os.close(fd)
