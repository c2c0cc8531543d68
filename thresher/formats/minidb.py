"""Caffe2 MiniDB: a plain file of records ``int32 key_len, int32 value_len, key, value``.

No header, index or checksum (``caffe2/core/db.cc``). Lengths are native ``int`` in native
byte order in Caffe2; we write little-endian, which is that order on every platform Caffe2
ran on. The reader builds an offset index by walking the length fields once.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

from thresher.atomic import disk_errors
from thresher.errors import CorruptShardError
from thresher.formats.base import ShardContext, ShardReader, ShardWriter, StorageFormat

HEADER = struct.Struct("<ii")


def frame(key: bytes, value: bytes) -> bytes:
    """One MiniDB record exactly as ``MiniDBTransaction::Put`` writes it."""
    return HEADER.pack(len(key), len(value)) + key + value


class MinidbWriter(ShardWriter):
    def __init__(self, path: Path, context: ShardContext) -> None:
        super().__init__(path, context)
        self.file: BinaryIO = open(path, "xb", buffering=1 << 20)  # noqa: SIM115 - closed in close()/abort()

    def append(self, key: bytes, payload: Any) -> None:
        if not key or not payload:
            raise ValueError("MiniDB readers reject empty keys and values")
        with disk_errors(self.path, len(payload)):
            self.file.write(HEADER.pack(len(key), len(payload)))
            self.file.write(key)
            self.file.write(payload)
        self.records += 1
        self.bytes += len(payload)

    def append_many(self, keys: list[bytes], payloads: list[Any]) -> None:
        if not all(keys) or not all(payloads):
            raise ValueError("MiniDB readers reject empty keys and values")
        frames = b"".join(b"".join((HEADER.pack(len(k), len(v)), k, v)) for k, v in zip(keys, payloads, strict=True))
        with disk_errors(self.path, len(frames)):
            self.file.write(frames)
        self.records += len(payloads)
        self.bytes += sum(map(len, payloads))

    def close(self) -> None:
        with disk_errors(self.path):
            self.file.flush()
            os.fsync(self.file.fileno())
        self.file.close()

    def abort(self) -> None:
        # Closing flushes the buffer, which fails again on a full disk; the data is discarded anyway.
        with contextlib.suppress(OSError):
            self.file.close()


class MinidbReader(ShardReader):
    def _open(self) -> None:
        with open(self.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            self.map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        self.offsets = index_records(self.map, self.path)

    def __len__(self) -> int:
        self._ensure_open()
        return len(self.offsets)

    def read(self, index: int) -> tuple[bytes, Any]:
        self._ensure_open()
        key_start, key_len, value_len = self.offsets[index]
        value_start = key_start + key_len
        return bytes(self.map[key_start:value_start]), bytes(self.map[value_start:value_start + value_len])

    def values(self, start: int, stop: int) -> list[Any]:
        """Zero-copy views into the mapping; a batch decoder joins them once."""
        self._ensure_open()
        view = memoryview(self.map)
        return [view[k + kl:k + kl + vl] for k, kl, vl in self.offsets[start:stop]]

    def close(self) -> None:
        if self._pid is not None and isinstance(self.map, mmap.mmap):
            with contextlib.suppress(BufferError):  # views still held by a caller keep it mapped
                self.map.close()
        super().close()


def index_records(data: Any, path: Path) -> list[tuple[int, int, int]]:
    """(key offset, key length, value length) of every record; a broken frame names its offset."""
    offsets = []
    pos = 0
    end = len(data)
    while pos < end:
        if end - pos < HEADER.size:
            raise CorruptShardError(f"{path}: truncated record header at byte {pos} (record {len(offsets)})")
        key_len, value_len = HEADER.unpack_from(data, pos)
        if key_len <= 0 or value_len <= 0:
            raise CorruptShardError(
                f"{path}: record {len(offsets)} at byte {pos} has key length {key_len}, value length {value_len}"
            )
        start = pos + HEADER.size
        if start + key_len + value_len > end:
            raise CorruptShardError(
                f"{path}: record {len(offsets)} at byte {pos} is truncated "
                f"(needs {key_len + value_len} bytes, {end - start} left)"
            )
        offsets.append((start, key_len, value_len))
        pos = start + key_len + value_len
    return offsets


class MinidbFormat(StorageFormat):
    name = "minidb"
    suffix = ".minidb"


    def writer(self, path: Path, context: ShardContext) -> ShardWriter:
        return MinidbWriter(path, context)

    def reader(self, path: Path, context: ShardContext) -> ShardReader:
        return MinidbReader(path, context)
