"""Check the element structure of a MATLAB v5 file before scipy.io parses it.

scipy's compiled parser trusts the sizes a file declares: a flipped bit (a "complex" flag with
no imaginary part, dimensions larger than the data) can crash the whole process instead of
raising. This walk only checks that every element fits where it claims to and that each array
holds as many values as its dimensions say; scipy still does the reading.
"""

from __future__ import annotations

import math
import struct
import zlib

_ITEM_SIZE = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8, 16: 1, 17: 2, 18: 4}
_MI_INT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 1, 5, 6, 14, 15
_CELL, _STRUCT, _OBJECT, _CHAR, _SPARSE = 1, 2, 3, 4, 5
_COMPLEX = 0x800
_FIELDLESS = 1 << 16  # elements a struct without fields may have
_NAMED = {_SPARSE: "a sparse matrix", 16: "a function handle", 17: "an opaque object"}


class BadElement(Exception):
    """What is wrong (``problem``) at ``where`` (a byte offset, maybe inside a compressed element)."""

    def __init__(self, where: str, problem: str, variable: str = "") -> None:
        super().__init__(f"{where}: {problem}")
        self.where, self.problem, self.variable = where, problem, variable


class _Walk:
    def __init__(self, buf: bytes, order: str, base: str = "") -> None:
        self.buf, self.order, self.base = buf, order, base
        self.variable = ""

    def bad(self, pos: int, problem: str) -> BadElement:
        return BadElement(f"{self.base}byte {pos}", problem, self.variable)

    def tag(self, pos: int, end: int) -> tuple[int, int, int, int]:
        """(type, data start, data size, next element) of the element at ``pos``."""
        if pos + 8 > end:
            raise self.bad(pos, "data ends inside an element tag; truncated?")
        first, second = struct.unpack_from(self.order + "II", self.buf, pos)
        if first >> 16:  # small element: size in the upper half, data in the tag's second word
            size = first >> 16
            if size > 4:
                raise self.bad(pos, f"small element claims {size} bytes (at most 4 fit)")
            return first & 0xFFFF, pos + 4, size, pos + 8
        if pos + 8 + second > end:
            raise self.bad(pos, f"element of {second} bytes runs past the end of its container; truncated?")
        padding = 0 if first == _MI_COMPRESSED else -second % 8  # compressed elements are not padded
        return first, pos + 8, second, min(pos + 8 + second + padding, end)

    def expect(self, pos: int, end: int, types: tuple[int, ...], what: str) -> tuple[int, int, int]:
        mtype, start, size, after = self.tag(pos, end)
        if mtype not in types:
            raise self.bad(pos, f"expected {what}, found element type {mtype}")
        return start, size, after

    def matrix(self, pos: int, end: int, top: bool = False) -> None:
        if pos == end:
            return  # an empty element (e.g. an empty cell entry)
        start, size, pos = self.expect(pos, end, (_MI_UINT32,), "array flags")
        if size < 8:
            raise self.bad(start, "array flags shorter than 8 bytes")
        flags = struct.unpack_from(self.order + "I", self.buf, start)[0]
        mclass = flags & 0xFF
        start, size, pos = self.expect(pos, end, (_MI_INT32,), "dimensions")
        if size % 4 or size < 8:
            raise self.bad(start, f"{size} bytes of dimensions (need two or more int32)")
        dims = struct.unpack_from(f"{self.order}{size // 4}i", self.buf, start)
        if min(dims) < 0:
            raise self.bad(start, f"negative dimension in {dims}")
        count = math.prod(dims)
        start, size, pos = self.expect(pos, end, (_MI_INT8,), "array name")
        if top:
            self.variable = self.buf[start:start + size].decode("latin-1")
        if mclass in _NAMED:
            raise self.bad(start, f"is {_NAMED[mclass]}, which has no dense array form")
        if mclass == _CELL:
            for _ in range(count):
                start, size, pos = self.expect(pos, end, (_MI_MATRIX,), "a cell's array")
                self.matrix(start, start + size)
        elif mclass in (_STRUCT, _OBJECT):
            if mclass == _OBJECT:
                _, _, pos = self.expect(pos, end, (_MI_INT8,), "class name")
            start, size, pos = self.expect(pos, end, (_MI_INT32,), "field name length")
            length = struct.unpack_from(self.order + "i", self.buf, start)[0] if size == 4 else 0
            if length <= 0:
                raise self.bad(start, "field name length is not a positive int32")
            start, size, pos = self.expect(pos, end, (_MI_INT8,), "field names")
            if size < length and count > _FIELDLESS:  # nothing bounds the element count but this
                raise self.bad(start, f"struct array of {count} elements without fields")
            for _ in range(count * (size // length)):
                start, size, pos = self.expect(pos, end, (_MI_MATRIX,), "a struct field's array")
                self.matrix(start, start + size)
        elif 4 <= mclass <= 15:
            for _part in range(2 if flags & _COMPLEX else 1):
                at = pos
                mtype, start, size, pos = self.tag(pos, end)
                if mtype not in _ITEM_SIZE:
                    raise self.bad(at, f"array data of unknown type {mtype}")
                utf8 = mclass == _CHAR and mtype == 16  # variable-width characters
                if not utf8 and size != count * _ITEM_SIZE[mtype]:
                    raise self.bad(at, f"{size} bytes of data for {count} values of {_ITEM_SIZE[mtype]} "
                                       f"bytes (dimensions {dims})")
        else:
            raise self.bad(start, f"unknown array class {mclass}")

    def file(self, pos: int, end: int) -> None:
        while pos < end:
            at = pos
            mtype, start, size, pos = self.tag(pos, end)
            self.variable = ""
            if mtype == _MI_MATRIX:
                self.matrix(start, start + size, top=True)
            elif mtype == _MI_COMPRESSED:
                inflate = zlib.decompressobj()
                try:
                    inner = inflate.decompress(self.buf[start:start + size])
                except zlib.error as exc:
                    raise self.bad(at, f"compressed element does not inflate ({exc})") from None
                if not inflate.eof:
                    raise self.bad(at, "compressed element is truncated")
                _Walk(inner, self.order, f"compressed element at byte {at}, ").file(0, len(inner))
            else:
                raise self.bad(at, f"element type {mtype} where a variable was expected")


def check_v5(raw: bytes) -> None:
    """Raise :class:`BadElement` if the elements after the 128-byte header do not fit together."""
    order = "<" if raw[126:128] == b"IM" else ">"
    _Walk(raw, order).file(128, len(raw))
