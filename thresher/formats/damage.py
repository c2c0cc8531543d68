"""What every reader checks before trusting a shard's bytes, and how it reports a damaged one.

A shard that was truncated or had bits flipped after it was written is not something a reader
can repair; the error names the file and tells the user how to find every damaged file and how
to get good ones back.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from thresher.errors import CorruptShardError
from thresher.manifest import MANIFEST_NAME


def damaged(path: Path, problem: str) -> CorruptShardError:
    """A CorruptShardError naming ``path``, saying what is wrong with it and what to do."""
    return CorruptShardError(
        f"{path}: {problem}; the shard is damaged: run `thresher verify {format_directory(path)}` "
        "to list every damaged file, then prepare the dataset again"
    )


def format_directory(path: Path) -> Path:
    """The directory holding the manifest that lists ``path`` (where ``thresher verify`` looks)."""
    for parent in Path(path).parents:
        if (parent / MANIFEST_NAME).is_file():
            return parent
    return Path(path).parent


def expected_size(expected_sizes: Mapping[str, int] | None, name: str) -> int | None:
    return None if expected_sizes is None else expected_sizes.get(name)


def check_size(path: Path, expected: int | None) -> int:
    """The file's size; a missing file or one whose size differs from the manifest's is damage."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise damaged(path, "missing") from None
    if expected is not None and size != expected:
        raise damaged(path, f"{size:,} bytes, the manifest says {expected:,}")
    return size


def map_file(path: Path, expected: int | None) -> Any:
    """The whole file mapped read-only after its size is checked (``b""`` when it is empty).

    Python's mmap bounds-checks every slice, so a reader that only slices it cannot read
    past the end, whatever lengths a damaged file claims.
    """
    size = check_size(path, expected)
    if size == 0:
        return b""
    with open(path, "rb") as fh:
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def unmap(data: Any) -> None:
    """Close a map made by :func:`map_file`; one that views handed out still use stays until they go."""
    if isinstance(data, mmap.mmap):
        with contextlib.suppress(BufferError):
            data.close()
