"""Read and write MATLAB Level 5 MAT files holding plain numeric matrices.

Some datasets ship their labels and splits as MAT files (Oxford Flowers' ``imagelabels.mat``
and ``setid.mat``). This is just enough of the v5 format for those, so scipy stays a test-only
dependency: numeric and logical matrices (and char matrices, read only), either byte order,
zlib-compressed elements, and the compact storage MATLAB uses (a double array written as
uint8 when its values fit). Anything else (cell, struct, sparse, complex, objects) is refused
with a :class:`MalformedDataError` naming the variable, as is any truncated or garbled input,
naming the byte offset.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from thresher.archive import describe_head
from thresher.errors import MalformedDataError

__all__ = ["load_mat", "save_mat"]

# Data element types (miXXX) and the numpy kind each holds.
_MI_INT8, _MI_UINT8, _MI_INT16, _MI_UINT16, _MI_INT32, _MI_UINT32 = 1, 2, 3, 4, 5, 6
_MI_SINGLE, _MI_DOUBLE, _MI_INT64, _MI_UINT64 = 7, 9, 12, 13
_MI_MATRIX, _MI_COMPRESSED, _MI_UTF8, _MI_UTF16, _MI_UTF32 = 14, 15, 16, 17, 18
_MI_DTYPE = {
    _MI_INT8: "i1",
    _MI_UINT8: "u1",
    _MI_INT16: "i2",
    _MI_UINT16: "u2",
    _MI_INT32: "i4",
    _MI_UINT32: "u4",
    _MI_SINGLE: "f4",
    _MI_DOUBLE: "f8",
    _MI_INT64: "i8",
    _MI_UINT64: "u8",
}
_DTYPE_MI = {code: mi for mi, code in _MI_DTYPE.items()}

# Array classes (mxXXX_CLASS).
_MX_CHAR = 4
_MX_DTYPE = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
_DTYPE_MX = {code: mx for mx, code in _MX_DTYPE.items()}
_MX_UNSUPPORTED = {
    1: "a cell array",
    2: "a struct",
    3: "an object",
    5: "a sparse matrix",
    16: "a function handle",
    17: "an opaque object",
}
_FLAG_COMPLEX, _FLAG_LOGICAL = 0x800, 0x200

_HEADER_TEXT = b"MATLAB 5.0 MAT-file, Platform: thresher"
# Integer types a double array may be stored in when every value fits (smallest first).
_COMPACT = (
    ("u1", _MI_UINT8),
    ("i1", _MI_INT8),
    ("u2", _MI_UINT16),
    ("i2", _MI_INT16),
    ("u4", _MI_UINT32),
    ("i4", _MI_INT32),
)


def _pad8(n: int) -> int:
    return (n + 7) & ~7


class _Parser:
    """Walks data elements of one buffer (the file, or one decompressed element)."""

    def __init__(self, buf: bytes, order: str, source: str, where: str = "") -> None:
        self.buf, self.order, self.source, self.where = buf, order, source, where

    def error(self, pos: int, problem: str) -> MalformedDataError:
        place = f"{self.where}, decompressed byte {pos}" if self.where else f"byte {pos}"
        return MalformedDataError(self.source, place, problem)

    def element(self, pos: int, end: int) -> tuple[int, int, int, int]:
        """(type, payload start, payload length, next element position) of the element at ``pos``."""
        if end - pos < 8:
            raise self.error(pos, f"truncated: a data element tag needs 8 bytes, {max(end - pos, 0)} left")
        first, second = struct.unpack_from(self.order + "II", self.buf, pos)
        if first >> 16:  # small data element: type and length share the first 4 bytes
            mtype, size = first & 0xFFFF, first >> 16
            if size > 4:
                raise self.error(pos, f"small data element claims {size} bytes (at most 4 fit)")
            return mtype, pos + 4, size, pos + 8
        mtype, size = first, second
        start = pos + 8
        stop = start + size if mtype == _MI_COMPRESSED else start + _pad8(size)
        if stop > end:
            raise self.error(
                pos, f"truncated: element of type {mtype} needs {stop - start} bytes, {end - start} left"
            )
        return mtype, start, size, stop

    def variables(self, pos: int, end: int, out: dict[str, np.ndarray]) -> None:
        while pos < end:
            if end - pos < 8 and not any(self.buf[pos:end]):
                return  # zero padding after the last element
            mtype, start, size, pos_next = self.element(pos, end)
            if mtype == _MI_COMPRESSED:
                self.compressed(pos, start, size, out)
            elif mtype == _MI_MATRIX:
                if size:
                    name, array = self.matrix(pos, start, start + size)
                    out[name] = array
            else:
                raise self.error(pos, f"unexpected top-level data element type {mtype} (expected a matrix)")
            pos = pos_next

    def compressed(self, pos: int, start: int, size: int, out: dict[str, np.ndarray]) -> None:
        inflater = zlib.decompressobj()
        try:
            head = inflater.decompress(self.buf[start : start + size], 8)
            if len(head) < 8:
                raise self.error(pos, "compressed element is truncated (no complete tag inside)")
            inner = _Parser(head, self.order, self.source, f"compressed element at byte {pos}")
            mtype, _, inner_size, _ = inner.element(0, 8 + (1 << 32))
            if mtype != _MI_MATRIX:
                raise self.error(pos, f"compressed element holds type {mtype}, not a matrix")
            body = inflater.decompress(inflater.unconsumed_tail, inner_size) if inner_size else b""
            if len(body) == inner_size and not inflater.eof:
                inflater.decompress(inflater.unconsumed_tail, 8)  # at most padding; checks adler32
                if not inflater.eof:
                    raise self.error(pos, "compressed element is truncated: its zlib stream does not end")
        except zlib.error as exc:
            raise self.error(pos, f"compressed element does not inflate: {exc}") from None
        if len(body) < inner_size:
            raise self.error(
                pos, f"compressed element is truncated: {len(body)} of {inner_size} bytes inflate"
            )
        inner = _Parser(head + body, self.order, self.source, f"compressed element at byte {pos}")
        if inner_size:
            name, array = inner.matrix(0, 8, 8 + inner_size)
            out[name] = array

    def matrix(self, pos: int, start: int, end: int) -> tuple[str, np.ndarray]:
        """Parse one miMATRIX payload (``start``..``end``); ``pos`` is its tag, for messages."""
        o = self.order
        mtype, at, size, nxt = self.element(start, end)
        if mtype != _MI_UINT32 or size < 8:
            raise self.error(
                start, f"array flags should be 8 bytes of uint32, found type {mtype}, {size} bytes"
            )
        flags = struct.unpack_from(o + "I", self.buf, at)[0]
        mclass = flags & 0xFF
        mtype, at, size, dims_next = self.element(nxt, end)
        if mtype != _MI_INT32 or size % 4 or size < 8:
            raise self.error(
                nxt, f"dimensions should be int32 (at least 2), found type {mtype}, {size} bytes"
            )
        dims = struct.unpack_from(f"{o}{size // 4}i", self.buf, at)
        mtype, at, size, nxt = self.element(dims_next, end)
        if mtype not in (_MI_INT8, _MI_UINT8):
            raise self.error(dims_next, f"array name should be int8, found type {mtype}")
        name = bytes(self.buf[at : at + size]).decode("latin-1")
        if not name:
            raise self.error(dims_next, "variable has an empty name")
        if any(d < 0 for d in dims):
            raise self.error(pos, f"variable {name!r} has negative dimensions {dims}")
        if mclass in _MX_UNSUPPORTED:
            raise self.error(
                pos, f"variable {name!r} is {_MX_UNSUPPORTED[mclass]}; only numeric matrices are supported"
            )
        if mclass != _MX_CHAR and mclass not in _MX_DTYPE:
            raise self.error(pos, f"variable {name!r} has unknown array class {mclass}")
        if flags & _FLAG_COMPLEX:
            raise self.error(pos, f"variable {name!r} is complex; only real matrices are supported")
        count = math.prod(dims)
        data_pos = nxt
        mtype, at, size, _ = self.element(data_pos, end)
        raw = self.buf[at : at + size]
        if mclass == _MX_CHAR:
            return name, self.chars(data_pos, name, mtype, raw, dims, count)
        if mtype not in _MI_DTYPE:
            raise self.error(data_pos, f"variable {name!r}: data of type {mtype} is not numeric")
        stored = np.dtype(o + _MI_DTYPE[mtype])
        if size != count * stored.itemsize:
            raise self.error(
                data_pos,
                f"variable {name!r}: {size} bytes of {stored.name} data, but dimensions {dims} need {count} values",
            )
        target = np.dtype(_MX_DTYPE[mclass])
        if stored.kind == "f" and target.kind != "f":
            raise self.error(data_pos, f"variable {name!r}: {target.name} class stored as {stored.name}")
        values = np.frombuffer(raw, dtype=stored, count=count).astype(target)
        array = np.ascontiguousarray(values.reshape(dims, order="F"))
        if flags & _FLAG_LOGICAL:
            array = array.astype(bool)
        return name, array

    def chars(
        self, pos: int, name: str, mtype: int, raw: bytes, dims: tuple[int, ...], count: int
    ) -> np.ndarray:
        big = self.order == ">"
        codecs = {
            _MI_UINT8: "latin-1",
            _MI_UTF8: "utf-8",
            _MI_UINT16: "utf-16-be" if big else "utf-16-le",
            _MI_UTF16: "utf-16-be" if big else "utf-16-le",
            _MI_UINT32: "utf-32-be" if big else "utf-32-le",
            _MI_UTF32: "utf-32-be" if big else "utf-32-le",
        }
        if mtype not in codecs:
            raise self.error(pos, f"char variable {name!r}: data of type {mtype} is not text")
        try:
            text = bytes(raw).decode(codecs[mtype])
        except UnicodeDecodeError as exc:
            raise self.error(pos, f"char variable {name!r} does not decode: {exc}") from None
        if len(text) != count:
            raise self.error(
                pos, f"char variable {name!r}: {len(text)} characters, dimensions {dims} need {count}"
            )
        return np.array(list(text), dtype="<U1").reshape(dims, order="F")


def load_mat(data: bytes | bytearray | Path | str, *, source: str = "") -> dict[str, np.ndarray]:
    """The variables of a MATLAB v5 MAT file, as native-endian arrays of MATLAB's shape.

    Numeric classes keep their dtype (double → float64, ...); logical → bool; char matrices
    → arrays of single characters. ``source`` names the file in errors (defaults to the path).
    """
    if isinstance(data, (str, os.PathLike)):
        source = source or str(data)
        buf = Path(data).read_bytes()
    else:
        buf = bytes(data)
    source = source or "<MAT bytes>"
    if len(buf) < 128:
        raise MalformedDataError(
            source, "byte 0", f"{len(buf)} bytes is too short for a MAT file header; it {describe_head(buf)}"
        )
    if buf.startswith(b"MATLAB 7.3") or buf[512:520] == b"\x89HDF\r\n\x1a\n":
        raise MalformedDataError(source, "byte 0", "MATLAB v7.3 (HDF5) MAT file; only v5 is supported")
    if 0 in buf[:4]:
        raise MalformedDataError(source, "byte 0", "not a v5 MAT file (no header text; a v4 MAT file?)")
    order = {b"IM": "<", b"MI": ">"}.get(buf[126:128])
    if order is None:
        raise MalformedDataError(
            source, "byte 126", f"no MAT v5 endian indicator ('IM' or 'MI'); the file {describe_head(buf)}"
        )
    version = struct.unpack_from(order + "H", buf, 124)[0]
    if version != 0x0100:
        raise MalformedDataError(source, "byte 124", f"MAT file version {version:#06x}, expected 0x0100")
    out: dict[str, np.ndarray] = {}
    _Parser(buf, order, source).variables(128, len(buf), out)
    return out


# -- writing ------------------------------------------------------------------------------------


def _element(mtype: int, payload: bytes, *, small: bool = True) -> bytes:
    if small and 0 < len(payload) <= 4:
        return struct.pack("<I", (len(payload) << 16) | mtype) + payload.ljust(4, b"\0")
    return struct.pack("<II", mtype, len(payload)) + payload + bytes(_pad8(len(payload)) - len(payload))


def _storage(values: np.ndarray, compact: bool) -> tuple[int, bytes]:
    """The element type and bytes that hold ``values`` (already in column-major order)."""
    if compact and values.dtype == np.float64 and values.size:
        finite = np.isfinite(values).all()
        if finite and (values == np.trunc(values)).all() and not np.signbit(values[values == 0]).any():
            low, high = values.min(), values.max()
            for code, mtype in _COMPACT:
                info = np.iinfo(code)
                if info.min <= low and high <= info.max:
                    return mtype, values.astype("<" + code).tobytes()
    code = values.dtype.str[1:]
    return _DTYPE_MI[code], values.astype("<" + code).tobytes()


def _matrix(name: str, value: object, compact: bool) -> bytes:
    array = np.asarray(value)
    logical = array.dtype == np.bool_
    if logical:
        array = array.astype(np.uint8)
    code = array.dtype.str[1:]
    if code not in _DTYPE_MX:
        raise ValueError(
            f"variable {name!r}: dtype {array.dtype} cannot be saved (numeric real or bool only)"
        )
    if array.ndim == 0:
        array = array.reshape(1, 1)
    elif array.ndim == 1:
        array = array.reshape(1, -1)  # MATLAB has no 1-D arrays; a vector is a row, as scipy writes it
    if any(d >= 2**31 for d in array.shape):
        raise ValueError(f"variable {name!r}: dimension too large for a MAT file: {array.shape}")
    flags = _DTYPE_MX[code] | (_FLAG_LOGICAL if logical else 0)
    mtype, data = _storage(array.ravel(order="F"), compact and not logical)
    body = (
        _element(_MI_UINT32, struct.pack("<II", flags, 0), small=False)
        + _element(_MI_INT32, struct.pack(f"<{array.ndim}i", *array.shape))
        + _element(_MI_INT8, name.encode("ascii"))
        + _element(mtype, data)
    )
    return struct.pack("<II", _MI_MATRIX, len(body)) + body


def save_mat(
    path: Path | str, arrays: Mapping[str, np.ndarray], *, compress: bool = True, compact: bool = True
) -> None:
    """Write ``arrays`` as a little-endian MATLAB v5 MAT file that MATLAB and scipy read.

    1-D arrays become rows (1, N). With ``compact`` a double array of small integers is
    stored as the smallest integer type that holds it, as MATLAB does; it reads back as double.
    The file is written to a temporary name and renamed, so readers never see half of it.
    """
    header = _HEADER_TEXT.ljust(116, b" ") + bytes(8) + struct.pack("<H", 0x0100) + b"IM"
    parts = [header]
    for name, value in arrays.items():
        if not (isinstance(name, str) and name.isascii() and name.isidentifier() and len(name) <= 63):
            raise ValueError(f"{name!r} is not a valid MATLAB variable name")
        element = _matrix(name, value, compact)
        if compress:
            packed = zlib.compress(element)
            element = struct.pack("<II", _MI_COMPRESSED, len(packed)) + packed
        parts.append(element)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"".join(parts))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
