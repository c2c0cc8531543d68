"""IDX files (MNIST and its relatives): a big-endian header, then a dense array.

Header: two zero bytes, a type code, the number of dimensions, then one big-endian uint32
per dimension. Reading streams in blocks so memory stays flat for any file size.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from thresher.errors import MalformedDataError

TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
         0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_header(stream: BinaryIO, source: str, *, ndim: int, dtype: int = 0x08) -> tuple[int, ...]:
    """Read and check the header; return the dimensions. ``ndim``/``dtype`` are what the caller expects."""
    head = stream.read(4)
    if len(head) < 4:
        raise MalformedDataError(source, "byte 0", f"file ends after {len(head)} bytes, inside the IDX header")
    zero, code, dims = struct.unpack(">HBB", head)
    expected_magic = (dtype << 8) | ndim
    if zero != 0 or code != dtype or dims != ndim:
        raise MalformedDataError(
            source, "byte 0",
            f"IDX magic 0x{int.from_bytes(head, 'big'):08x} is not 0x{expected_magic:08x} "
            f"({ndim}-D {TYPES.get(dtype, '?')})",
        )
    raw = stream.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise MalformedDataError(source, "byte 4", "file ends inside the IDX dimensions")
    return struct.unpack(f">{ndim}I", raw)


def iter_blocks(stream: BinaryIO, source: str, shape: tuple[int, ...], *, dtype: int = 0x08,
                block: int = 4096) -> Iterator[np.ndarray]:
    """Yield the array ``shape`` (after the header) in blocks of rows; a short file names the row."""
    item = TYPES[dtype]
    row = int(np.prod(shape[1:], dtype=np.int64)) * item.itemsize
    header = 4 + 4 * len(shape)
    for start in range(0, shape[0], block):
        rows = min(block, shape[0] - start)
        data = stream.read(rows * row)
        if len(data) < rows * row:
            got = start + len(data) // max(row, 1)
            raise MalformedDataError(
                source, f"byte {header + start * row + len(data)}",
                f"file is truncated: header says {shape[0]} items, data ends in item {got}",
            )
        yield np.frombuffer(data, dtype=item).reshape(rows, *shape[1:])
    if stream.read(1):
        raise MalformedDataError(source, f"byte {header + shape[0] * row}",
                                 f"trailing data after the {shape[0]} items the header declares")


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> None:
    """Write an IDX file (gzip-compressed like the published MNIST files), for miniatures and tests."""
    codes = {v.str.lstrip("<>|="): k for k, v in TYPES.items()}
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    code = codes[np.dtype(array.dtype).str.lstrip("<>|=")]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(big).tobytes()
    if compress:
        path.write_bytes(gzip.compress(payload, compresslevel=6, mtime=0))
    else:
        path.write_bytes(payload)
