"""LMDB shards as Caffe, Caffe2 and DALI read them: a directory holding ``data.mdb``.

Keys arrive in ascending order, so puts use MDB_APPEND (a sequential bulk load, the fast
path). The map starts near the expected size and doubles when full, like Caffe's
``DoubleMapSize``; never a fixed 1 TB map. ``lock.mdb`` is removed after writing (shards are
immutable; Caffe recreates it if it wants one). Thresher reads the file without liblmdb, which
would crash on a damaged one (see lmdb_pages).
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

MIN_MAP_SIZE = 16 << 20
# What a failing write surfaces as; MapFullError is handled (the map grows) before this applies.
LMDB_ERRORS: tuple[type[BaseException], ...] = (lmdb.Error,)
COMMIT_BYTES = 16 << 20


class LmdbWriter(ShardWriter):
    def __init__(self, path: Path, context: ShardContext) -> None:
        super().__init__(path, context)
        self.map_size = max(MIN_MAP_SIZE, _round_up_pow2(int(context.expected_bytes * 1.5)))
        path.mkdir(parents=True, exist_ok=False)
        self.env = lmdb.open(
            str(path), map_size=self.map_size, subdir=True, sync=False, metasync=False,
            readahead=False, meminit=True, max_dbs=0, lock=True,
        )
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

    def _commit(self) -> None:
        if not self.pending:
            return
        with disk_errors(self.path / "data.mdb", self.pending_bytes, LMDB_ERRORS):
            while True:
                try:
                    with self.env.begin(write=True) as txn:
                        txn.cursor().putmulti(self.pending, append=True)
                    break
                except lmdb.MapFullError:  # grow like Caffe's DoubleMapSize and redo the batch
                    self.map_size *= 2
                    self.env.set_mapsize(self.map_size)
        self.pending = []
        self.pending_bytes = 0

    def close(self) -> None:
        self._commit()
        with disk_errors(self.path / "data.mdb", None, LMDB_ERRORS):
            self.env.sync(True)
        self.env.close()
        (self.path / "lock.mdb").unlink(missing_ok=True)

    def abort(self) -> None:
        with contextlib.suppress(lmdb.Error):
            self.env.close()


class LmdbReader(MappedReader):
    """Records sliced from ``data.mdb`` as indexed by a checked walk of its B-tree (lmdb_pages)."""

    def data_file(self) -> Path:
        return self.path / "data.mdb"

    def index(self, data: Any, damage: Callable[[str], CorruptShardError]) -> list[Record]:
        if not self.path.is_dir():
            raise damaged(self.path, "missing (an LMDB shard is a directory holding data.mdb)")
        return index_records(data, damage)


class LmdbFormat(StorageFormat):
    name = "lmdb"

    def writer(self, path: Path, context: ShardContext) -> ShardWriter:
        return LmdbWriter(path, context)

    def reader(self, path: Path, context: ShardContext,
               expected_sizes: Mapping[str, int] | None = None) -> ShardReader:
        return LmdbReader(path, context, expected_sizes)


def _round_up_pow2(n: int) -> int:
    return 1 << max(n - 1, 1).bit_length()
