"""Shared pieces of the record codecs: the ``Codec`` protocol, varints, channel order, batching.

The fast paths write and read protobuf wire bytes by hand, so the varint helpers here must agree
with protobuf exactly: an ``int32`` is written as the 64-bit two's complement varint (10 bytes when
negative) and read back from the low 32 bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from thresher.features import Schema
from thresher.features.channels import CHANNEL_ORDERS, interleave, needs_swap, swap_rb, swapped_order
from thresher.features.integer import INT32_MAX, INT32_MIN

__all__ = ["CHANNEL_ORDERS", "interleave", "needs_swap", "swap_rb", "swapped_order"]
_U64 = 1 << 64


@runtime_checkable
class Codec(Protocol):
    """Turns one record into one DB value and back. ``decode(encode(r)) == r`` always."""

    name: str

    def check(self, schema: Schema) -> None: ...

    def encode(self, record: dict, schema: Schema, channel_order: str) -> bytes: ...

    def decode(self, value: bytes, schema: Schema, channel_order: str) -> dict: ...

    def decode_batch(self, values: Sequence[bytes], schema: Schema, channel_order: str) -> dict[str, np.ndarray]: ...


class PlanCache:
    """Per (schema, channel order) precomputed state, found by identity first (cheap per record),
    then by equality so that a fresh but equal Schema object still reuses the warm caches."""

    def __init__(self, build: Callable[[Schema, str], Any]) -> None:
        self._build = build
        self._by_id: dict[tuple[int, str], tuple[Schema, Any]] = {}
        self._by_value: dict[tuple[Schema, str], Any] = {}
        self._last: tuple[Any, str, Any] = (None, "", None)

    def get(self, schema: Schema, channel_order: str) -> Any:
        last = self._last  # one tuple, so another thread never sees a half-updated memo
        if last[0] is schema and last[1] == channel_order:
            return last[2]
        plan = self._lookup(schema, channel_order)
        self._last = (schema, channel_order, plan)
        return plan

    def _lookup(self, schema: Schema, channel_order: str) -> Any:
        hit = self._by_id.get((id(schema), channel_order))
        if hit is not None and hit[0] is schema:
            return hit[1]
        try:
            plan = self._by_value.get((schema, channel_order))
            hashable = True
        except TypeError:  # a Field built with a list shape
            plan, hashable = None, False
        if plan is None:
            plan = self._build(schema, channel_order)
            if hashable:
                if len(self._by_value) >= 64:
                    self._by_value.clear()
                self._by_value[(schema, channel_order)] = plan
        if len(self._by_id) >= 256:
            self._by_id.clear()
        self._by_id[(id(schema), channel_order)] = (schema, plan)
        return plan


# --------------------------------------------------------------------------- varints

_SMALL = [bytes((i,)) for i in range(128)]


def varint(value: int) -> bytes:
    """Protobuf varint of ``value``; negatives as 64-bit two's complement (like int32/int64)."""
    if 0 <= value < 128:
        return _SMALL[value]
    if value < 0:
        value += _U64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Read one varint at ``pos``: (unsigned 64-bit value, position after it). IndexError if cut."""
    result = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & (_U64 - 1), pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint longer than 10 bytes")


# --------------------------------------------------------------------------- batches


def varint_columns(cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode one varint per row of an (N, k) byte matrix, as protobuf int32 would.

    Returns (values as int64, ok mask); ok is False where the row is not exactly one well-formed
    varint of k bytes or its value is not an int32 (those rows go to the slow path).
    """
    count, k = cols.shape
    if not 1 <= k <= 10:
        return np.zeros(count, np.int64), np.zeros(count, bool)
    ok = cols[:, k - 1] < 0x80
    value = (cols[:, 0] & 0x7F).astype(np.uint64)
    for j in range(1, k):
        ok &= cols[:, j - 1] >= 0x80
        value |= (cols[:, j] & 0x7F).astype(np.uint64) << np.uint64(7 * j)
    signed = value.view(np.int64)
    ok &= (signed >= INT32_MIN) & (signed <= INT32_MAX)
    return signed, ok


TailParser = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def split_fixed(
    values: Sequence[bytes], head: bytes, n: int, parse_tail: TailParser
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slice values laid out as ``head + n payload bytes + tail`` without a Python loop per value.

    Values are joined into one buffer grouped by length, so each group is an (count, length)
    matrix: the head is compared column-wise, ``parse_tail`` reads the label from the tail
    columns, and the payload is a column slice. Returns (payload (N, n), labels (N,), indices of
    values that did not match, to be decoded one at a time; their payload rows are garbage).
    """
    count = len(values)
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=count)
    first = int(lengths[0])
    if (lengths == first).all():
        groups = [(first, None)]
        buf = np.frombuffer(bytearray().join(values), np.uint8)
    else:
        order = np.argsort(lengths, kind="stable")
        buf = np.frombuffer(bytearray().join([values[i] for i in order.tolist()]), np.uint8)
        sizes, counts = np.unique(lengths, return_counts=True)
        bounds = np.concatenate(([0], np.cumsum(counts)))
        groups = [(int(size), order[bounds[g] : bounds[g + 1]]) for g, size in enumerate(sizes)]
    head_arr = np.frombuffer(head, np.uint8)
    hl = len(head)
    labels = np.zeros(count, np.int64)
    bad: list[np.ndarray] = []
    payload: np.ndarray | None = None
    offset = 0
    for size, where in groups:
        rows_count = count if where is None else len(where)
        rows = buf[offset : offset + size * rows_count].reshape(rows_count, size)
        offset += size * rows_count
        if size < hl + n + 1:
            bad.append(np.arange(count) if where is None else where)
            continue
        got, ok = parse_tail(rows[:, hl + n :])
        ok &= (rows[:, :hl] == head_arr).all(axis=1)
        if where is None:
            payload = rows[:, hl : hl + n]
            labels = got
            bad.append(np.flatnonzero(~ok))
            break
        if payload is None:
            payload = np.empty((count, n), np.uint8)
        payload[where] = rows[:, hl : hl + n]
        labels[where] = got
        bad.append(where[~ok])
    if payload is None:
        payload = np.zeros((count, n), np.uint8)
    return payload, labels, np.sort(np.concatenate(bad))


def decode_each(
    values: Sequence[bytes], schema: Schema, decode: Callable[[bytes], dict]
) -> dict[str, np.ndarray]:
    """The slow batch path: decode one record at a time and stack each column."""
    records = [decode(v) for v in values]
    return {f.name: f.batch_column([r[f.name] for r in records]) for f in schema}


class PlannedCodec:
    """What both codecs share: a plan cache per schema, and pickling as a registry lookup.

    Worker processes receive codecs by name, so the caches are never copied across processes.
    """

    name: str
    plan_type: Callable[[Schema, str], Any]

    def __init__(self) -> None:
        self._plans = PlanCache(self.plan_type)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        from thresher.codecs import get_codec

        return get_codec, (self.name,)

    def batch_layout(self, plan: Any) -> BatchLayout | None:
        """How a fixed-shape raw image + int label value is laid out, or None for other schemas."""
        return None

    def value_layout(self, schema: Schema, channel_order: str) -> ValueLayout | None:
        """How to read a fixed-shape raw image + int label straight out of stored values, or None.

        Readers check every value of a shard against it at once, then slice records directly.
        """
        return None

    def encode(self, record: dict, schema: Schema, channel_order: str) -> bytes:
        raise NotImplementedError

    def encode_batch(self, columns: dict[str, Any], schema: Schema, channel_order: str) -> list[bytes]:
        """Many records given as columns (arrays with a leading record axis) at once.

        For the hot layout the pixels of the whole batch are reordered in one numpy step and
        each value is ``head + pixels + label tail``; byte-identical to :meth:`encode` per record.
        """
        plan = self._plans.get(schema, channel_order)
        layout = self.batch_layout(plan)
        if layout is not None:
            images = columns[layout.image]
            shape = tuple(images.shape[1:]) if isinstance(images, np.ndarray) else None
            if shape == layout.shape and images.dtype == np.uint8:
                if needs_swap(channel_order, shape[2]):
                    images = swap_rb(images)
                if layout.planar and shape[2] > 1:
                    images = images.transpose(0, 3, 1, 2)
                pixels = np.ascontiguousarray(images).reshape(len(images), -1)
                tail, head = layout.tail, layout.head
                labels = np.asarray(columns[layout.label]).tolist()
                tails = [tail(label) for label in labels]
                if tails and len({len(t) for t in tails}) == 1:  # one row layout: build all values at once
                    return _fixed_rows(head, pixels, tails)
                return [b"".join((head, row, t)) for row, t in zip(pixels, tails, strict=True)]
        names = list(columns)
        return [self.encode(dict(zip(names, row, strict=True)), schema, channel_order)
                for row in zip(*(columns[n] for n in names), strict=True)]


def _fixed_rows(head: bytes, pixels: np.ndarray, tails: list[bytes]) -> list[bytes]:
    """Values of equal length laid out in one array, then cut: no per-value join."""
    n, width = pixels.shape
    tail_width = len(tails[0])
    size = len(head) + width + tail_width
    table = np.empty((n, size), np.uint8)
    table[:, : len(head)] = np.frombuffer(head, np.uint8)
    table[:, len(head) : len(head) + width] = pixels
    table[:, len(head) + width :] = np.frombuffer(b"".join(tails), np.uint8).reshape(n, tail_width)
    blob = table.tobytes()
    return [blob[i : i + size] for i in range(0, n * size, size)]


class BatchLayout:
    """The fixed parts of an image + label value: header bytes, pixel order, label tail."""

    def __init__(self, image: str, label: str, shape: tuple[int, ...], head: bytes, planar: bool,
                 tail: Callable[[int], bytes]) -> None:
        self.image, self.label, self.shape, self.head, self.planar, self.tail = image, label, shape, head, planar, tail


@dataclass(frozen=True)
class ValueLayout:
    """The decode side of a fixed-shape raw image + int label value: ``head``, then the pixels, then a tail
    that ``parse_tail`` reads labels from (as :func:`split_fixed` does); ``to_image`` turns a value's
    pixel bytes into a fresh (H, W, C) RGB array."""

    image: str
    label: str
    head: bytes
    shape: tuple[int, int, int]
    parse_tail: TailParser
    to_image: Callable[[np.ndarray], np.ndarray]

    @property
    def size(self) -> int:
        h, w, c = self.shape
        return h * w * c
