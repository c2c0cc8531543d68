"""Bytes that stay in their file until the process that needs them reads them.

A member of an uncompressed archive (``102flowers.tgz`` is one) lies at a fixed offset, so a
recipe can hand an :class:`Extent` to the encoder instead of the bytes. With ``--workers N``
each worker then reads its own photos with one ``pread`` rather than receiving them through a
pipe from the process that walks the archive, and the recipe holds a few numbers per
out-of-order record instead of the record's bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from thresher.errors import CorruptArchiveError
from thresher.sources.perprocess import PerProcess

_OPEN_LIMIT = 16  # descriptors kept per process, least recently used closed first


@dataclass(frozen=True)
class Extent:
    """``size`` bytes at ``offset`` of the file ``path`` (member ``member`` of that archive).

    ``inode`` and ``mtime_ns`` identify the file the extent was taken from: a file replaced
    since (a re-download) is refused rather than read at old offsets.
    """

    path: str
    offset: int
    size: int
    member: str
    inode: int
    mtime_ns: int

    def read(self, size: int | None = None) -> bytes:
        """The bytes (or the first ``size`` of them)."""
        want = self.size if size is None else min(size, self.size)
        fd = _descriptors.get(self)
        data = os.pread(fd, want, self.offset)
        while len(data) < want:  # pread may return less than asked; 0 means the file ended
            more = os.pread(fd, want - len(data), self.offset + len(data))
            if not more:
                raise CorruptArchiveError(self.path, f"member {self.member!r}",
                                          f"file ends {want - len(data)} bytes before the member's end")
            data += more
        return data


def _open_file(extent: Extent) -> int:
    fd = os.open(extent.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    status = os.fstat(fd)
    if (status.st_ino, status.st_mtime_ns) != (extent.inode, extent.mtime_ns):
        os.close(fd)
        raise CorruptArchiveError(extent.path, f"member {extent.member!r}",
                                  "the archive was replaced while it was being converted")
    return fd


class _Descriptors:
    """Open files per process, keyed by the file's identity (a forked child opens its own)."""

    def __init__(self) -> None:
        self.files: PerProcess[int] = PerProcess(_OPEN_LIMIT, os.close)

    def get(self, extent: Extent) -> int:
        return self.files.get((extent.path, extent.inode, extent.mtime_ns), lambda: _open_file(extent))


_descriptors = _Descriptors()


def resolved(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with every :class:`Extent` value replaced by its bytes (the same dict if none)."""
    if not any(isinstance(value, Extent) for value in record.values()):
        return record
    return {name: value.read() if isinstance(value, Extent) else value for name, value in record.items()}


def head(data: bytes | Extent, size: int) -> bytes:
    """The first ``size`` bytes of a value that may still be in its file."""
    return data.read(size) if isinstance(data, Extent) else data[:size]
