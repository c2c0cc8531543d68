"""LMDB shards as Caffe, Caffe2 and DALI read them: a directory holding ``data.mdb``.

Keys arrive in ascending order, so puts use MDB_APPEND (a sequential bulk load, the fast
path). The map starts near the expected size and doubles when full, like Caffe's
``DoubleMapSize``; never a fixed 1 TB map. ``lock.mdb`` is removed after writing (shards are
immutable; Caffe recreates it if it wants one). Thresher reads the file without liblmdb, which
would crash on a damaged one (see lmdb_pages).

A record whose codec value is :class:`~thresher.formats.parts.FieldParts` (Datum of an image
and its label maps) is written as one LMDB per schema field, ``shard-NNNNN/<field>/data.mdb``,
all with the same keys: what a Caffe net reads with one Data layer per field.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from collections.abc import Callable, Mapping
from itertools import accumulate
from operator import add
from pathlib import Path
from typing import Any

import lmdb

from thresher.atomic import disk_errors
from thresher.errors import CorruptShardError
from thresher.formats.base import ShardContext, ShardReader, ShardWriter, StorageFormat
from thresher.formats.damage import damaged
from thresher.formats.lmdb_pages import index_records
from thresher.formats.mapped import MappedReader, Record
from thresher.formats.parts import FieldParts

MIN_MAP_SIZE = 16 << 20
# What a failing write surfaces as; MapFullError is handled (the map grows) before this applies.
LMDB_ERRORS: tuple[type[BaseException], ...] = (lmdb.Error,)
COMMIT_BYTES = 16 << 20


class _Env:
    """One LMDB environment being written, its map grown like Caffe's ``DoubleMapSize`` when full."""

    def __init__(self, path: Path, map_size: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path, self.map_size = path, map_size
        self.env = lmdb.open(
            str(path), map_size=map_size, subdir=True, sync=False, metasync=False,
            readahead=False, meminit=True, max_dbs=0, lock=True,
        )

    def put(self, items: list[tuple[bytes, bytes]], size: int) -> None:
        with disk_errors(self.path / "data.mdb", size, LMDB_ERRORS):
            while True:
                try:
                    with self.env.begin(write=True) as txn:
                        txn.cursor().putmulti(items, append=True)
                    return
                except lmdb.MapFullError:  # grow and redo the batch
                    self.map_size *= 2
                    self.env.set_mapsize(self.map_size)

    def close(self) -> None:
        with disk_errors(self.path / "data.mdb", None, LMDB_ERRORS):
            self.env.sync(True)
        self.env.close()
        (self.path / "lock.mdb").unlink(missing_ok=True)

    def abort(self) -> None:
        with contextlib.suppress(lmdb.Error):
            self.env.close()


class LmdbWriter(ShardWriter):
    def __init__(self, path: Path, context: ShardContext) -> None:
        super().__init__(path, context)
        self.map_size = max(MIN_MAP_SIZE, _round_up_pow2(int(context.expected_bytes * 1.5)))
        path.mkdir(parents=True, exist_ok=False)
        # Opened at the first commit: one environment, or one per field when values come in parts.
        self.envs: list[_Env] = []
        self.pending: list[tuple[bytes, bytes]] = []
        self.pending_bytes = 0

    def append(self, key: bytes, payload: Any) -> None:
        self.append_many([key], [payload])

    def append_many(self, keys: list[bytes], payloads: list[Any]) -> None:
        """Queue records, committing whenever ``COMMIT_BYTES`` have gathered since the last commit.

        A commit falls after the record that reaches the threshold, wherever the call's
        boundaries lie, so commit points (and so the file's pages) depend only on the shard's
        records, never on how a run or task batched them or where it resumed.
        """
        sizes = list(map(len, payloads))
        self.records += len(payloads)
        self.bytes += sum(sizes)
        # gathered[i]: bytes pending once record i-1 is queued, counted from the last commit.
        gathered = list(accumulate(map(add, map(len, keys), sizes), initial=self.pending_bytes))
        start = committed = 0
        while (cut := bisect_left(gathered, committed + COMMIT_BYTES, start + 1)) < len(gathered):
            self.pending.extend(zip(keys[start:cut], payloads[start:cut], strict=True))
            self.pending_bytes = gathered[cut] - committed
            self._commit()
            start, committed = cut, gathered[cut]
        self.pending.extend(zip(keys[start:], payloads[start:], strict=True))
        self.pending_bytes = gathered[-1] - committed

    def flush(self) -> None:
        self._commit()

    def _open(self, parted: bool) -> None:
        if not parted:
            self.envs = [_Env(self.path, self.map_size)]
            return
        self.envs = [_Env(self.path / name, self.map_size) for name in self.context.schema.names]

    def _commit(self) -> None:
        if not self.pending:
            return
        if not self.envs:
            self._open(isinstance(self.pending[0][1], FieldParts))
        if len(self.envs) == 1:
            self.envs[0].put(self.pending, self.pending_bytes)
        else:
            split = [(key, _parts(value, len(self.envs))) for key, value in self.pending]
            for i, env in enumerate(self.envs):
                env.put([(key, parts[i]) for key, parts in split], self.pending_bytes)
        self.pending = []
        self.pending_bytes = 0

    def close(self) -> None:
        self._commit()
        if not self.envs:
            self._open(False)  # an empty shard is still an LMDB
        for env in self.envs:
            env.close()

    def abort(self) -> None:
        for env in self.envs:
            env.abort()


def _parts(value: Any, count: int) -> list[bytes]:
    if not isinstance(value, FieldParts) or len(value.bounds) != count + 1:
        raise TypeError(f"a shard of per-field LMDBs takes {count} parts for every record")
    return value.parts()


class LmdbReader(MappedReader):
    """Records sliced from ``data.mdb`` as indexed by a checked walk of its B-tree (lmdb_pages)."""

    def data_file(self) -> Path:
        return self.path / "data.mdb"

    def index(self, data: Any, damage: Callable[[str], CorruptShardError]) -> list[Record]:
        if not self.path.is_dir():
            raise damaged(self.path, "missing (an LMDB shard is a directory holding data.mdb)")
        return index_records(data, damage)


class LmdbFieldsReader(ShardReader):
    """A shard of one LMDB per field: each record's values, read at the same index, as FieldParts.

    Every LMDB must hold the same keys in the same order; one that does not is damage.
    """

    def _open(self) -> None:
        sizes = self.expected_sizes or {}
        self.readers = [
            LmdbReader(self.path / name, self.context,
                       {"data.mdb": sizes[f"{name}/data.mdb"]} if f"{name}/data.mdb" in sizes else None)
            for name in self.context.schema.names
        ]
        first, *others = self.readers
        keys = [first.read(i)[0] for i in range(len(first))]
        for other in others:
            if len(other) != len(keys) or any(other.read(i)[0] != key for i, key in enumerate(keys)):
                raise damaged(other.path / "data.mdb",
                              f"does not hold the same keys as {first.path / 'data.mdb'} ({len(other)} records "
                              f"against {len(keys)})")

    def __len__(self) -> int:
        self._ensure_open()
        return len(self.readers[0])

    def read(self, index: int) -> tuple[bytes, Any]:
        self._ensure_open()
        key, first = self.readers[0].read(index)
        return key, FieldParts([first, *(reader.read(index)[1] for reader in self.readers[1:])])

    def values(self, start: int, stop: int) -> list[Any]:
        self._ensure_open()
        columns = [reader.values(start, stop) for reader in self.readers]
        return [FieldParts(parts) for parts in zip(*columns, strict=True)]

    def close(self) -> None:
        for reader in getattr(self, "readers", ()):
            reader.close()
        super().close()


def _per_field(path: Path, context: ShardContext, expected_sizes: Mapping[str, int] | None) -> bool:
    """Whether the shard holds one LMDB per field: as its manifest entry lists its files, else as on disk."""
    first = f"{context.schema.names[0]}/data.mdb" if len(context.schema) else None
    if first is None:
        return False
    if expected_sizes is not None:
        return first in expected_sizes
    return (path / first).is_file()


class LmdbFormat(StorageFormat):
    name = "lmdb"

    def writer(self, path: Path, context: ShardContext) -> ShardWriter:
        return LmdbWriter(path, context)

    def reader(self, path: Path, context: ShardContext,
               expected_sizes: Mapping[str, int] | None = None) -> ShardReader:
        if _per_field(path, context, expected_sizes):
            return LmdbFieldsReader(path, context, expected_sizes)
        return LmdbReader(path, context, expected_sizes)


def _round_up_pow2(n: int) -> int:
    return 1 << max(n - 1, 1).bit_length()
