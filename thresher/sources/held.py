"""Members met before their turn, held until it comes: in memory up to a budget, then on disk.

A gzip stream can be walked only once, so a member a split lists later than the archive holds
it must be kept. Kept in memory without bound, a list in another order than the archive (a
tar made from a directory, in readdir order) held most of the archive in memory; past the
budget, held members go to an unlinked temporary file beside the archive instead.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

from thresher.errors import CorruptArchiveError
from thresher.sources.archive import Member

MEMORY_BUDGET = 256 << 20  # bytes of held members kept in memory before they go to disk


class HeldMembers:
    """Where members met early are kept: ``keep`` gives a member readable after the walk moves on."""

    def __init__(self, label: str, directory: Path | None, budget: int = MEMORY_BUDGET) -> None:
        self.label, self.directory, self.budget = label, directory, budget
        self.in_memory: dict[str, int] = {}  # name -> bytes held in memory
        self.memory_used = 0
        self.spill: _SpillFile | None = None

    def keep(self, member: Member) -> Member:
        if member.extent is not None:  # an uncompressed archive on disk: only where it lies is kept
            return member.kept()
        if self.memory_used + member.size <= self.budget:
            kept = member.kept()
            self.in_memory[member.name] = kept.size
            self.memory_used += kept.size
            return kept
        if self.spill is None:
            self.spill = _SpillFile(self.label, self.directory)
        return self.spill.store(member)

    def dropped(self, name: str) -> None:
        """A held member was handed out for the last time: its memory no longer counts."""
        self.memory_used -= self.in_memory.pop(name, 0)


class _SpillFile:
    """An unlinked temporary file that held members are appended to; closed when no member needs it."""

    def __init__(self, label: str, directory: Path | None) -> None:
        self.label = label
        try:  # beside the archive: the disk that holds it likely has the room
            self.file = tempfile.TemporaryFile(dir=directory, prefix=".thresher-held-")  # noqa: SIM115
        except OSError:  # a read-only download directory: the system's temporary directory then
            self.file = tempfile.TemporaryFile(prefix=".thresher-held-")  # noqa: SIM115
        self.end = 0

    def store(self, member: Member) -> Member:
        offset = self.end
        with member.open() as source:
            shutil.copyfileobj(source, self.file, 1 << 20)
        self.end = self.file.tell()
        size = self.end - offset
        return member.with_opener(lambda: io.BytesIO(self.read(offset, size)), size)

    def read(self, offset: int, size: int) -> bytes:
        self.file.flush()
        data = os.pread(self.file.fileno(), size, offset)
        if len(data) != size:
            raise CorruptArchiveError(self.label, "a member held on disk", f"read {len(data)} of {size} bytes back")
        return data

