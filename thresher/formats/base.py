"""The shape every storage format shares: shards written once under a temporary name, read many times.

Key-value formats (LMDB, minidb) store codec values; HDF5 stores arrays per field, so its
payload is the record itself. Readers open their handles lazily and per process, so a
dataset object can be handed to DataLoader worker processes (no handle crosses a fork).
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from thresher.schema import Schema

if TYPE_CHECKING:
    from thresher.codecs.base import ValueLayout
    from thresher.formats.fixed import FixedRecords


class _Process:
    """This process's id, kept current across fork without a system call on every read."""

    pid = os.getpid()

    @classmethod
    def after_fork(cls) -> None:
        cls.pid = os.getpid()


_process = _Process
os.register_at_fork(after_in_child=_Process.after_fork)


def current_pid() -> int:
    """This process's id without a system call (readers check it on every record)."""
    return _process.pid


@dataclass(frozen=True)
class ShardContext:
    """What a writer or reader needs to know beyond the bytes: the schema and pixel layout."""

    schema: Schema
    channel_order: str = "RGB"
    expected_bytes: int = 0  # a hint for pre-sizing (LMDB map), never a limit
    most_records: int = 0  # the records a shard can hold (0: unknown); HDF5 chunks no more rows than that


class ShardWriter(ABC):
    """Writes one shard at a temporary path; the caller renames it when ``close`` returns."""

    def __init__(self, path: Path, context: ShardContext) -> None:
        self.path = path
        self.context = context
        self.records = 0
        self.bytes = 0
        # The first and last key written, set before ``close``; formats that keep no keys (HDF5)
        # store them so that a reader can check a shard against its manifest entry.
        self.key_range: tuple[str, str] | None = None

    @abstractmethod
    def append(self, key: bytes, payload: Any) -> None:
        """Add one record; keys arrive in ascending order."""

    def append_many(self, keys: list[bytes], payloads: list[Any]) -> None:
        """Add many records at once; formats override this to skip per-record work."""
        for key, payload in zip(keys, payloads, strict=True):
            self.append(key, payload)

    def append_batch(self, keys: list[bytes], batch: Any) -> None:
        """Add records given as columns (a RecordBatch); formats override this to do it column-wise."""
        for key, record in zip(keys, batch.rows(), strict=True):
            self.append(key, record)

    def flush(self) -> None:  # noqa: B027 - an optional hook; most formats buffer nothing
        """Hand buffered records to the format's library; the rest of ``close`` may then run on another thread.

        Formats whose library is slow to call from a second thread (LMDB puts would contend
        for the GIL record by record) do that work here, on the thread that appended.
        """

    @abstractmethod
    def close(self) -> None:
        """Flush, sync and close; the shard is then complete at ``self.path``."""

    @abstractmethod
    def abort(self) -> None:
        """Close handles after a failure; the caller removes the temporary path."""


class ShardReader(ABC):
    """Random and sequential access to one finished shard.

    ``expected_sizes`` maps the name of each file of the shard to its size in the manifest; a
    file of another size is damaged and is refused before any library maps or parses it.
    """

    def __init__(self, path: Path, context: ShardContext, expected_sizes: Mapping[str, int] | None = None) -> None:
        self.path = path
        self.context = context
        self.expected_sizes = dict(expected_sizes) if expected_sizes is not None else None
        self._pid: int | None = None

    def _ensure_open(self) -> None:
        pid = _process.pid
        if self._pid != pid:
            self._open()
            self._pid = pid

    @abstractmethod
    def _open(self) -> None:
        """(Re)open handles in this process."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def read(self, index: int) -> tuple[bytes, Any]:
        """Return (key, payload) of the record at ``index`` within this shard."""

    def values(self, start: int, stop: int) -> list[Any]:
        """Payloads of records ``start..stop-1`` in order (the bulk path of sequential reading)."""
        return [payload for _, payload in self.iterate(start, stop)]

    def iterate(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[bytes, Any]]:
        """Sequential access; formats override this with a faster cursor."""
        stop = len(self) if stop is None else stop
        for i in range(start, stop):
            yield self.read(i)

    def fixed_records(self, layout: ValueLayout) -> FixedRecords | None:
        """Records checked against a codec's fixed value layout for direct reads, where the format allows."""
        return None

    def key_range(self) -> tuple[str, str] | None:
        """The first and last key stored (None when empty), to check the shard against its manifest entry."""
        if len(self) == 0:
            return None
        return self.read(0)[0].decode(errors="replace"), self.read(len(self) - 1)[0].decode(errors="replace")

    def close(self) -> None:
        self._pid = None

    def __getstate__(self) -> dict[str, Any]:
        # Handles never cross a process boundary; the child reopens lazily.
        return {"path": self.path, "context": self.context, "expected_sizes": self.expected_sizes, "_pid": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class SplitFilesCheck(NamedTuple):
    """What ``check_split_files`` found: problems fail ``verify``; warnings are printed and do not."""

    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


class StorageFormat(ABC):
    name: str
    suffix: str = ""  # after ``shard-NNNNN``: a file extension, or nothing for a directory
    uses_codec: bool = True

    def shard_name(self, index: int) -> str:
        return f"shard-{index:05d}{self.suffix}"

    def shard_index(self, name: str) -> int | None:
        """The index of a shard named ``name``, or None if the name is not one of this format's."""
        match = re.fullmatch(r"shard-(\d{5,})" + re.escape(self.suffix), name)
        return int(match.group(1)) if match else None

    @abstractmethod
    def writer(self, path: Path, context: ShardContext) -> ShardWriter: ...

    @abstractmethod
    def reader(self, path: Path, context: ShardContext,
               expected_sizes: Mapping[str, int] | None = None) -> ShardReader: ...

    def write_split_files(self, split_dir: Path, shard_paths: list[Path]) -> list[Path]:
        """Extra files a split needs beside its shards (HDF5's list file); written after the shards."""
        return []

    def check_split_files(self, split_dir: Path, shard_paths: list[Path]) -> SplitFilesCheck:
        """Problems with those extra files, for ``thresher verify``, and what is stale but harmless to the data."""
        return SplitFilesCheck()
