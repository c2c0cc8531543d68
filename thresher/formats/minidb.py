"""Caffe2 MiniDB: a plain file of records ``int32 key_len, int32 value_len, key, value``.

No header, index or checksum (``caffe2/core/db.cc``). Lengths are native ``int`` in native
byte order in Caffe2; we write little-endian, which is that order on every platform Caffe2
ran on. The reader builds an offset index by walking the length fields once, each checked
against the file's end.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from thresher.atomic import disk_errors
from thresher.errors import CorruptShardError, UnsupportedCodecError
from thresher.formats.base import ShardContext, ShardReader, ShardWriter, StorageFormat
from thresher.formats.mapped import MappedReader, Record
from thresher.formats.parts import FieldParts

HEADER = struct.Struct("<ii")


def frame(key: bytes, value: bytes) -> bytes:
    """One MiniDB record exactly as ``MiniDBTransaction::Put`` writes it."""
    return HEADER.pack(len(key), len(value)) + key + value


def _refuse_parts(payload: Any) -> None:
    """A value meant for one LMDB per field (Datum of an image and its label maps) has no MiniDB form."""
    if isinstance(payload, FieldParts):
        raise UnsupportedCodecError("minidb holds one value per key, and Datum writes an image and its label maps "
                                    "as one LMDB per field: use --format lmdb, or --codec tensorprotos")


class MinidbWriter(ShardWriter):
    def __init__(self, path: Path, context: ShardContext) -> None:
        super().__init__(path, context)
        self.file: BinaryIO = open(path, "xb", buffering=1 << 20)  # noqa: SIM115 - closed in close()/abort()

    def append(self, key: bytes, payload: Any) -> None:
        _refuse_parts(payload)
        if not key or not payload:
            raise ValueError("MiniDB readers reject empty keys and values")
        with disk_errors(self.path, len(payload)):
            self.file.write(HEADER.pack(len(key), len(payload)))
            self.file.write(key)
            self.file.write(payload)
        self.records += 1
        self.bytes += len(payload)

    def append_many(self, keys: list[bytes], payloads: list[Any]) -> None:
        if payloads:
            _refuse_parts(payloads[0])
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


class MinidbReader(MappedReader):
    def data_file(self) -> Path:
        return self.path

    def index(self, data: Any, damage: Callable[[str], CorruptShardError]) -> list[Record]:
        return index_records(data, damage)


def index_records(data: Any, damage: Callable[[str], CorruptShardError]) -> list[Record]:
    """Where every record's key and value lie; a broken frame names its offset."""
    records = []
    pos = 0
    end = len(data)
    while pos < end:
        if end - pos < HEADER.size:
            raise damage(f"truncated record header at byte {pos} (record {len(records)})")
        key_len, value_len = HEADER.unpack_from(data, pos)
        if key_len <= 0 or value_len <= 0:
            raise damage(f"record {len(records)} at byte {pos} has key length {key_len}, value length {value_len}")
        start = pos + HEADER.size
        if start + key_len + value_len > end:
            raise damage(f"record {len(records)} at byte {pos} is truncated "
                         f"(needs {key_len + value_len} bytes, {end - start} left)")
        records.append((start, key_len, start + key_len, value_len))
        pos = start + key_len + value_len
    return records


class MinidbFormat(StorageFormat):
    name = "minidb"
    suffix = ".minidb"


    def writer(self, path: Path, context: ShardContext) -> ShardWriter:
        return MinidbWriter(path, context)

    def reader(self, path: Path, context: ShardContext,
               expected_sizes: Mapping[str, int] | None = None) -> ShardReader:
        return MinidbReader(path, context, expected_sizes)
