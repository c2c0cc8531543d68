"""One record's values for several key-value stores that share its key.

Caffe segmentation nets read an image and its label map through two Data layers, one LMDB
each, matched by key. A codec that writes such a record returns :class:`FieldParts`: to the
conversion machinery it is one ``bytes`` payload (its length is what the parts store), and the
LMDB writer puts part ``i`` into the store of schema field ``i``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate
from typing import Any


class FieldParts(bytes):
    """The parts joined, with where each one starts; pickles as its parts."""

    bounds: tuple[int, ...]

    def __new__(cls, parts: Sequence[bytes | memoryview]) -> FieldParts:
        value = super().__new__(cls, b"".join(parts))
        value.bounds = tuple(accumulate((len(p) for p in parts), initial=0))
        return value

    def parts(self) -> list[bytes]:
        """Each store's value, in schema order."""
        whole = bytes(self)
        return [whole[a:b] for a, b in zip(self.bounds, self.bounds[1:], strict=False)]

    def __reduce__(self) -> tuple[Any, ...]:
        return FieldParts, (self.parts(),)
