"""Free-space check before a download starts, so a 150 GB fetch does not die at 149 GB."""

from __future__ import annotations

import shutil
from pathlib import Path

from thresher.errors import DiskSpaceError


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def check_free_space(directory: Path, needed: int, what: str) -> None:
    """Raise DiskSpaceError when the filesystem holding ``directory`` has fewer than ``needed`` bytes free.

    Measured on ``directory`` itself (after it is created), not on a parent or the home
    directory, so a download dir on another mount is judged by that mount.
    """
    if needed <= 0:
        return
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise DiskSpaceError(
            f"{directory}: {what} needs {needed} bytes ({human_bytes(needed)}) but only {free} bytes "
            f"({human_bytes(free)}) are free on that filesystem; free some space or choose another "
            f"--download-dir"
        )
