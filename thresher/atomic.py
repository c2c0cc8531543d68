"""Atomic placement: nothing half written is ever visible under a final name."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from thresher.errors import DiskSpaceError, WriteError

DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


# What Linux answers when a filesystem cannot fsync a directory; the rename is atomic all the same.
_NO_DIRECTORY_FSYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


def temporary_name(final: Path) -> Path:
    """A sibling name unique to this thread, on the same filesystem as ``final`` (so rename is atomic).

    Every temporary matches ``.*.tmp-*``, which is how a resumed run finds a killed run's leftovers.
    """
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{threading.get_ident()}")


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable, where the filesystem can."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIRECTORY_FSYNC:
            raise
    finally:
        os.close(fd)


def place(tmp: Path, final: Path) -> None:
    """Move a finished file or directory to its final name, replacing an old one of the same kind.

    An old directory is removed only for a new directory (LMDB shards are directories); a file
    never replaces a directory, so a download cannot delete a folder that happens to have its name.
    """
    if tmp.is_dir() and final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write_bytes_atomic(final: Path, data: bytes) -> None:
    """Write a small file whole under a temporary name, fsync it, then rename it into place."""
    tmp = temporary_name(final)
    try:
        with disk_errors(final, len(data)), open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        place(tmp, final)
    finally:
        remove(tmp)


@contextlib.contextmanager
def disk_errors(path: Path, needed: int | None = None,
                library_errors: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Turn a full disk or file-size limit into a DiskSpaceError naming the path and the space needed.

    Libraries report these vaguely (py-lmdb says "Input/output error", h5py raises RuntimeError),
    so for their errors the actual condition is checked; any other failure of theirs is still
    reported with the path, never as a bare library traceback.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS or (library_errors and space_exhausted(path, needed)):
            raise disk_full_error(path, needed) from exc
        raise
    except library_errors as exc:
        if space_exhausted(path, needed):
            raise disk_full_error(path, needed) from exc
        raise WriteError(f"{path}: writing failed: {exc}") from exc


def space_exhausted(path: Path, needed: int | None) -> bool:
    """True when the filesystem is (nearly) full or a file-size limit is in force."""
    free = shutil.disk_usage(existing_parent(path)).free
    if free < max(needed or 0, 1 << 20):
        return True
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return soft != resource.RLIM_INFINITY


def disk_full_error(path: Path, needed: int | None = None) -> DiskSpaceError:
    free = shutil.disk_usage(existing_parent(path)).free
    want = f"; about {human_bytes(needed)} needed" if needed else ""
    return DiskSpaceError(
        f"{path}: the disk is full or the file size limit was reached ({human_bytes(free)} free{want}). "
        "Nothing was left under the final name; free space and run again to resume."
    )


def check_free_space(path: Path, needed: int, what: str, hint: str = "free some space") -> None:
    """Refuse to start work that cannot fit, instead of failing hours into it.

    Measured on ``path`` itself (or its nearest existing parent), so a directory on another
    mount is judged by that mount.
    """
    if needed <= 0:
        return
    free = shutil.disk_usage(existing_parent(path)).free
    if needed > free:
        raise DiskSpaceError(
            f"{path}: {what} needs about {human_bytes(needed)} ({needed:,} bytes) but only "
            f"{human_bytes(free)} ({free:,} bytes) is free on that filesystem; {hint}"
        )


def existing_parent(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return path


def human_bytes(n: float | None) -> str:
    if n is None:
        return "unknown size"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
