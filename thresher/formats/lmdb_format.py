"""LMDB shards as Caffe, Caffe2 and DALI read them: a directory holding ``data.mdb``.

Keys arrive in ascending order, so puts use MDB_APPEND (a sequential bulk load, the fast
path). The map starts near the expected size and doubles when full, like Caffe's
``DoubleMapSize``; never a fixed 1 TB map. ``lock.mdb`` is removed after writing: readers
open read-only without locking (shards are immutable), and Caffe recreates it if it wants one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb

from thresher.atomic import disk_errors
from thresher.errors import CorruptShardError
from thresher.formats.base import ShardContext, ShardReader, ShardWriter, StorageFormat

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
        self.records += len(payloads)
        start = 0
        pending_bytes = self.pending_bytes
        for i, (key, payload) in enumerate(zip(keys, payloads, strict=True)):
            size = len(payload)
            self.bytes += size
            pending_bytes += len(key) + size
            if pending_bytes >= COMMIT_BYTES:
                self.pending.extend(zip(keys[start:i + 1], payloads[start:i + 1], strict=True))
                self.pending_bytes = pending_bytes
                self._commit()
                start, pending_bytes = i + 1, 0
        self.pending.extend(zip(keys[start:], payloads[start:], strict=True))
        self.pending_bytes = pending_bytes

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


class _SharedEnvironments:
    """One read-only environment per LMDB path per process, shared by every reader of it.

    LMDB forbids opening the same environment twice in a process (py-lmdb refuses), and an
    environment must not be used after fork; a child therefore drops what it inherited
    and opens its own.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.envs: dict[str, list[Any]] = {}  # realpath -> [environment, number of readers]

    def acquire(self, path: Path) -> lmdb.Environment:
        self._forget_inherited()
        key = os.path.realpath(path)
        entry = self.envs.get(key)
        if entry is None:
            try:
                env = lmdb.open(key, readonly=True, lock=False, subdir=True, readahead=False, max_readers=2048)
            except lmdb.Error as exc:
                raise CorruptShardError(f"{path}: cannot open as LMDB: {exc}") from exc
            entry = self.envs[key] = [env, 0]
        entry[1] += 1
        return entry[0]

    def release(self, path: Path) -> None:
        if self.pid != os.getpid():
            return
        key = os.path.realpath(path)
        entry = self.envs.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del self.envs[key]
                entry[0].close()

    def _forget_inherited(self) -> None:
        if self.pid == os.getpid():
            return
        for env, _ in self.envs.values():
            with contextlib.suppress(lmdb.Error):
                env.close()  # the child's copy of the mapping and descriptor only
        self.envs.clear()
        self.pid = os.getpid()


_ENVIRONMENTS = _SharedEnvironments()


class LmdbReader(ShardReader):
    def _open(self) -> None:
        self.env = _ENVIRONMENTS.acquire(self.path)
        self.txn = self.env.begin(buffers=False)
        self._length = self.env.stat()["entries"]
        self._keys: list[bytes] | None = None

    def __len__(self) -> int:
        self._ensure_open()
        return self._length

    def keys(self) -> list[bytes]:
        self._ensure_open()
        if self._keys is None:
            with self.txn.cursor() as cursor:
                self._keys = list(cursor.iternext(keys=True, values=False))
        return self._keys

    def read(self, index: int) -> tuple[bytes, Any]:
        key = self.keys()[index]
        value = self.txn.get(key)
        if value is None:
            raise CorruptShardError(f"{self.path}: record {index} (key {key.decode(errors='replace')}) is missing")
        return key, value

    def values(self, start: int, stop: int) -> list[Any]:
        self._ensure_open()
        if start >= stop:
            return []
        with self.txn.cursor() as cursor:
            if not cursor.set_key(self.keys()[start]):
                raise CorruptShardError(f"{self.path}: record {start} is missing")
            return list(itertools.islice(cursor.iternext(keys=False, values=True), stop - start))

    def iterate(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[bytes, Any]]:
        self._ensure_open()
        stop = len(self) if stop is None else stop
        if start >= stop:
            return
        with self.txn.cursor() as cursor:
            if start == 0:
                cursor.first()
            else:
                cursor.set_key(self.keys()[start])
            for n, item in enumerate(cursor.iternext(keys=True, values=True)):
                if start + n >= stop:
                    break
                yield item

    def close(self) -> None:
        if self._pid == os.getpid():
            with contextlib.suppress(lmdb.Error):
                self.txn.abort()
            _ENVIRONMENTS.release(self.path)
        super().close()


class LmdbFormat(StorageFormat):
    name = "lmdb"


    def writer(self, path: Path, context: ShardContext) -> ShardWriter:
        return LmdbWriter(path, context)

    def reader(self, path: Path, context: ShardContext) -> ShardReader:
        return LmdbReader(path, context)


def _round_up_pow2(n: int) -> int:
    return 1 << max(n - 1, 1).bit_length()
