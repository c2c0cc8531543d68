"""A per-file advisory lock so two processes (or threads) never write the same download.

``fcntl.flock`` locks belong to the open file description, so two threads of one process that
each open the lock file exclude each other just like two processes do, and the kernel drops
the lock when a holder dies. The lock file is left in place on purpose: deleting it while
another process waits on it would let a third process lock a different inode.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from thresher.errors import LockTimeout

log = logging.getLogger("thresher.fetch")


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (held by pid {text})" if text.isdigit() else ""


@contextlib.contextmanager
def file_lock(path: Path, timeout: float | None = None, poll: float = 0.05) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed); ``LockTimeout`` after ``timeout`` s.

    ``timeout=None`` waits for ever. The holder's pid is written into the file so a waiting
    process can say who it is waiting for.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"{path}: another process is still working on this file{_holder(fd)} "
                        f"after {timeout:g} s; let it finish, then run again"
                    ) from None
                if not announced:
                    log.info("waiting for %s%s", path, _holder(fd))
                    announced = True
                time.sleep(poll)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError:  # a full disk must not stop us taking the lock
            pass
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
