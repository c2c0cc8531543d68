"""Checks on the paths a user types, made before any download so a typo costs nothing.

Each failure is a ThresherError reading ``<path>: <what is wrong> (<option>)``, which the CLI
prints on one line; :func:`describe_os_error` does the same for an OSError met later.
"""

from __future__ import annotations

import os
from pathlib import Path

from thresher.errors import ThresherError


def check_directory(path: Path, option: str, *, writable: bool = True) -> None:
    """``path`` is a directory, or can be created as one; with ``writable``, files can be made in it."""
    path = Path(path)
    existing = _nearest_existing(path, option)
    if not existing.is_dir():
        where = "" if existing == path.absolute() else f" (so {path} cannot be created)"
        raise ThresherError(f"{existing}: not a directory{where}; given as {option}")
    if writable and not os.access(existing, os.W_OK | os.X_OK):
        raise ThresherError(f"{existing}: {_why_unwritable(existing)}; {option} needs to write there")


def check_readable_file(path: Path, option: str) -> None:
    """``path`` is an existing regular file this process may read."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ThresherError(f"{path}: is a directory, {option} needs a file")
        if not path.is_file():
            raise ThresherError(f"{path}: no such file; given as {option}")
    except OSError as exc:
        raise ThresherError(f"{describe_os_error(exc)}; given as {option}") from None
    if not os.access(path, os.R_OK):
        raise ThresherError(f"{path}: permission denied (cannot read it); given as {option}")


def check_output_file(path: Path, option: str) -> None:
    """``path`` can be written as a file: not a directory, in a directory that can be made and written."""
    path = Path(path)
    if path.is_dir():
        raise ThresherError(f"{path}: is a directory, {option} needs a file name")
    check_directory(path.parent, option)


def describe_os_error(exc: OSError) -> str:
    """``<path>: <reason>`` from an OSError, naming both paths of a rename or link."""
    if exc.filename is None:
        return str(exc)
    names = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
    return f"{names}: {exc.strerror or exc}"


def _nearest_existing(path: Path, option: str) -> Path:
    """``path`` or the closest ancestor that exists (``/etc/passwd`` for ``/etc/passwd/x``)."""
    probe = path.absolute()
    while True:
        try:
            os.stat(probe)
            return probe
        except (FileNotFoundError, NotADirectoryError):
            if probe.parent == probe:
                return probe
            probe = probe.parent
        except OSError as exc:
            raise ThresherError(f"{describe_os_error(exc)}; given as {option}") from None


def _why_unwritable(path: Path) -> str:
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    return "permission denied (not writable)"
