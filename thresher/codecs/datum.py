"""Caffe ``Datum`` codec: one image plus one int32 label per value (``caffe.proto``).

An image with label maps (segmentation) is written as one Datum per field, for one LMDB each
(see :mod:`thresher.codecs.datum_maps`).

Raw images are written like ``convert_imageset``: channels/height/width, planar CHW ``data`` in the
stored channel order, ``label`` and an explicit ``encoded=false`` (``38 00``), because DALI's Caffe
reader treats a Datum without ``encoded`` as an encoded image. Encoded images are written like
``convert_imageset --encoded``: only ``data`` (the file bytes), ``label`` and ``encoded=true``.

Two paths produce the same bytes: the protobuf-message path (``encode_reference`` /
``decode_reference``, the definition) and a hand-written fast path (``encode``/``decode``/
``decode_batch``) that reuses a constant header per image shape and a cached tail per label.

Decoding a Datum that carries ``float_data`` instead of uint8 ``data`` (``array_to_datum`` of a
float array) raises CorruptShardError: thresher never writes those and has no schema kind for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from thresher.codecs.base import (
    BatchLayout,
    PlannedCodec,
    ValueLayout,
    interleave,
    needs_swap,
    read_varint,
    split_fixed,
    swap_rb,
    swapped_order,
    varint,
    varint_columns,
)
from thresher.codecs.base import decode_each as _decode_each
from thresher.codecs.datum_maps import MapsPlan, decode_maps, encode_maps, maps_fields
from thresher.codecs.messages import Datum
from thresher.errors import CorruptShardError, UnsupportedCodecError
from thresher.features import Image, Integer, Schema, classic_pair
from thresher.features.pictures import encoded_bytes

_CACHE_LIMIT = 1 << 16
_RAW_SUFFIX = b"\x38\x00"
_ENCODED_SUFFIX = b"\x38\x01"


def raw_header(shape: tuple[int, int, int]) -> bytes:
    """Bytes before the pixels of a raw Datum of (H, W, C): channels, height, width, data tag+length."""
    h, w, c = shape
    return b"".join((b"\x08", varint(c), b"\x10", varint(h), b"\x18", varint(w), b"\x22", varint(h * w * c)))


class _Plan:
    """What one (schema, channel order) needs, computed once: fields, headers, label tails."""

    def __init__(self, schema: Schema, channel_order: str) -> None:
        DatumCodec.check(schema)
        self.channel_order = channel_order
        pair = classic_pair(schema)
        assert pair is not None  # check() refused anything else
        self.image: Image = pair[0]
        self.label: Integer = pair[1]
        self.raw = not self.image.is_encoded
        self.suffix = _RAW_SUFFIX if self.raw else _ENCODED_SUFFIX
        self.shape: tuple[int, int, int] | None = None
        if self.raw and self.image.shape is not None:
            if len(self.image.shape) != 3:
                raise UnsupportedCodecError(f"field {self.image.name!r}: image shape {self.image.shape} is not (H, W, C)")
            self.shape = tuple(self.image.shape)  # type: ignore[assignment]
            needs_swap(channel_order, self.shape[2])  # reject a bad order up front
        self.headers: dict[tuple[int, ...], bytes] = {}
        self.tails: dict[Any, bytes] = {}  # label -> b"\x28" + varint + suffix
        self.labels: dict[bytes, int] = {}  # canonical tail -> label (filled by decode)
        self.layout: ValueLayout | None = None  # made by value_layout when a reader asks

    def header(self, shape: tuple[int, ...]) -> bytes:
        head = self.headers.get(shape)
        if head is None:
            head = raw_header(shape)  # type: ignore[arg-type]
            if len(self.headers) < 256:
                self.headers[shape] = head
        return head

    def tail(self, label: Any) -> bytes:
        try:
            tail = self.tails.get(label)
        except TypeError:  # unhashable: let checked_int32 say what is wrong
            tail = None
        if tail is None:
            value = self.label.int32(label)
            tail = b"\x28" + varint(value) + self.suffix
            if len(self.tails) < _CACHE_LIMIT:
                self.tails[value] = tail
        return tail


def _plan_for(schema: Schema, channel_order: str) -> _Plan | MapsPlan:
    return MapsPlan(schema, channel_order) if maps_fields(schema) is not None else _Plan(schema, channel_order)


class DatumCodec(PlannedCodec):
    """Caffe ``Datum`` values; see the module docstring."""

    name = "datum"
    plan_type = staticmethod(_plan_for)

    def batch_layout(self, plan: _Plan | MapsPlan) -> BatchLayout | None:
        if isinstance(plan, MapsPlan) or plan.shape is None:
            return None
        return BatchLayout(plan.image.name, plan.label.name, plan.shape, plan.header(plan.shape), True, plan.tail)

    def value_layout(self, schema: Schema, channel_order: str) -> ValueLayout | None:
        plan = self._plans.get(schema, channel_order)
        if isinstance(plan, MapsPlan) or plan.shape is None:
            return None
        if plan.layout is None:
            shape = plan.shape
            plan.layout = ValueLayout(plan.image.name, plan.label.name, plan.header(shape), shape, _parse_tails,
                                      lambda pixels: _to_hwc(pixels, shape, channel_order))
        return plan.layout

    # ------------------------------------------------------------------ schema

    @staticmethod
    def check(schema: Schema, dataset: str | None = None) -> None:
        """Refuse a schema that is neither one image and one int label, nor one image and its label maps."""
        pair = classic_pair(schema)
        if pair is not None:
            pair[1].check_int32_bounds("datum")
            return
        if maps_fields(schema) is not None:
            return
        images = [f for f in schema if type(f) is Image]
        ints = [f for f in schema if isinstance(f, Integer) and f.scalar]
        keep = {images[0].name} if len(images) == 1 else set()
        if len(ints) == 1 and images:
            keep.add(ints[0].name)
        lost = [f.name for f in schema if f.name not in keep]
        who = dataset or "this dataset"
        if lost:
            problem = f"{who} has {', '.join(lost)}"
        elif not images:
            problem = f"{who} has no image field"
        else:
            problem = f"{who} has no integer label"
        raise UnsupportedCodecError(
            f"datum holds one image and one integer label, or one image and its label maps (masks); "
            f"{problem}; use --codec tensorprotos or --format hdf5, which hold every field"
        )

    def _plan(self, schema: Schema, channel_order: str) -> _Plan:
        plan = self._plans.get(schema, channel_order)
        if isinstance(plan, MapsPlan):
            raise TypeError("an image with label maps has no single Datum; use encode/decode")
        return plan

    # ------------------------------------------------------------------ encode

    def encode(self, record: dict, schema: Schema, channel_order: str) -> bytes:
        """Fast path; byte-identical to :meth:`encode_reference`."""
        maps = self._plans.get(schema, channel_order)
        if isinstance(maps, MapsPlan):
            return encode_maps(self, maps, record)
        plan = self._plan(schema, channel_order)
        tail = plan.tail(record[plan.label.name])
        value = record[plan.image.name]
        if not plan.raw:
            data = encoded_bytes(value, plan.image.name, plan.image.encoding)
            return b"".join((b"\x22", varint(len(data)), data, tail))
        img = plan.image.pixels(value)
        c = img.shape[2]
        if needs_swap(channel_order, c):
            img = swap_rb(img)
        pixels = img.tobytes() if c == 1 else img.transpose(2, 0, 1).tobytes()
        return b"".join((plan.header(img.shape), pixels, tail))

    def encode_reference(self, record: dict, schema: Schema, channel_order: str) -> bytes:
        """The definition of the bytes, through the protobuf message."""
        plan = self._plan(schema, channel_order)
        datum = Datum()
        value = record[plan.image.name]
        if plan.raw:
            img = plan.image.pixels(value)
            h, w, c = img.shape
            if needs_swap(channel_order, c):
                img = swap_rb(img)
            datum.channels, datum.height, datum.width = c, h, w
            datum.data = np.ascontiguousarray(img.transpose(2, 0, 1)).tobytes()
        else:
            datum.data = encoded_bytes(value, plan.image.name, plan.image.encoding)
        datum.label = plan.label.int32(record[plan.label.name])
        datum.encoded = not plan.raw
        return datum.SerializeToString()

    # ------------------------------------------------------------------ decode

    def decode(self, value: bytes, schema: Schema, channel_order: str) -> dict:
        """Fast path for values in the layout thresher writes; anything else goes through protobuf."""
        maps = self._plans.get(schema, channel_order)
        if isinstance(maps, MapsPlan):
            return decode_maps(self, maps, value)
        plan = self._plan(schema, channel_order)
        if type(value) is not bytes:
            value = bytes(value)
        if plan.shape is not None:
            head = plan.header(plan.shape)
            h, w, c = plan.shape
            n = h * w * c
            end = len(head) + n
            if value.startswith(head):
                label = plan.labels.get(value[end:])
                if label is not None:
                    pixels = np.frombuffer(value, np.uint8, n, len(head))
                    return {plan.image.name: _to_hwc(pixels, plan.shape, channel_order), plan.label.name: label}
            record = self.decode_reference(value, schema, channel_order)
            self._learn_tail(plan, record)
            return record
        if not plan.raw and value[:1] == b"\x22":
            try:
                size, pos = _read_len(value, 1)
            except (IndexError, ValueError):
                size, pos = -1, 0
            if size >= 0:
                label = plan.labels.get(value[pos + size :])
                if label is not None:
                    return {plan.image.name: value[pos : pos + size], plan.label.name: label}
                record = self.decode_reference(value, schema, channel_order)
                self._learn_tail(plan, record)
                return record
        return self.decode_reference(value, schema, channel_order)

    @staticmethod
    def _learn_tail(plan: _Plan, record: dict) -> None:
        """Map the tail encode writes for this label to the label, for later fast decodes."""
        if len(plan.labels) < _CACHE_LIMIT:
            label = record[plan.label.name]
            plan.labels[b"\x28" + varint(label) + plan.suffix] = label

    def decode_reference(self, value: bytes, schema: Schema, channel_order: str) -> dict:
        """Parse with protobuf and check the Datum against the schema."""
        plan = self._plan(schema, channel_order)
        try:
            datum = Datum.FromString(bytes(value))
        except (DecodeError, ValueError) as exc:
            raise CorruptShardError(f"value is not a Caffe Datum ({len(value)} bytes): {exc}") from None
        image, label = plan.image, plan.label
        if not datum.data and len(datum.float_data):
            raise CorruptShardError(
                f"datum holds {len(datum.float_data)} float_data values instead of uint8 data; "
                "thresher reads only uint8 datums"
            )
        if not datum.HasField("label"):
            raise CorruptShardError("datum has no label")
        if datum.encoded:
            if plan.raw:
                raise CorruptShardError(f"datum holds an encoded image but field {image.name!r} is raw pixels")
            return {image.name: datum.data, label.name: datum.label}
        if not plan.raw:
            raise CorruptShardError(f"datum holds raw pixels but field {image.name!r} is encoded {image.encoding}")
        c, h, w = datum.channels, datum.height, datum.width
        if c <= 0 or h <= 0 or w <= 0:
            raise CorruptShardError(f"raw datum has channels={c}, height={h}, width={w}; all must be positive")
        if len(datum.data) != c * h * w:
            raise CorruptShardError(
                f"datum data holds {len(datum.data)} bytes but channels*height*width = {c}*{h}*{w} = {c * h * w}"
            )
        if image.shape is not None and (h, w, c) != tuple(image.shape):
            raise CorruptShardError(f"datum image is {(h, w, c)} but the schema says {image.shape} for {image.name!r}")
        try:
            needs_swap(channel_order, c)
        except ValueError as exc:
            raise CorruptShardError(str(exc)) from None
        pixels = np.frombuffer(datum.data, np.uint8)
        return {image.name: _to_hwc(pixels, (h, w, c), channel_order), label.name: datum.label}

    def decode_batch(self, values: Sequence[bytes], schema: Schema, channel_order: str) -> dict[str, np.ndarray]:
        """Decode many values into columns: images (N, H, W, C) uint8 and labels (N,) int64.

        Fixed-shape raw images are checked and sliced with numpy over one joined buffer; values that
        do not match the expected layout are decoded one by one (and may raise CorruptShardError).
        Other schemas decode one by one and stack (object arrays where shapes differ).
        """
        plan = self._plans.get(schema, channel_order)
        if isinstance(plan, MapsPlan) or plan.shape is None or not values:
            return _decode_each(values, schema, lambda v: self.decode(v, schema, channel_order))
        h, w, c = plan.shape
        payload, labels, bad = split_fixed(values, plan.header(plan.shape), h * w * c, _parse_tails)
        images = _to_hwc_batch(payload, plan.shape, channel_order)
        for i in bad.tolist():
            record = self.decode(values[i], schema, channel_order)
            images[i] = record[plan.image.name]
            labels[i] = record[plan.label.name]
        return {plan.image.name: images, plan.label.name: labels}


def _parse_tails(tails: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels from (N, T) tails that should read ``28 <varint> 38 00``."""
    size = tails.shape[1]
    if size < 4:
        return np.zeros(len(tails), np.int64), np.zeros(len(tails), bool)
    labels, ok = varint_columns(tails[:, 1 : size - 2])
    ok &= (tails[:, 0] == 0x28) & (tails[:, size - 2] == 0x38) & (tails[:, size - 1] == 0x00)
    return labels, ok


def _read_len(value: bytes, pos: int) -> tuple[int, int]:
    size, pos = read_varint(value, pos)
    if pos + size > len(value):
        raise ValueError("length runs past the end")
    return size, pos


def _to_hwc(pixels: np.ndarray, shape: tuple[int, int, int], channel_order: str) -> np.ndarray:
    """Planar CHW bytes in the stored order -> a fresh (H, W, C) RGB array."""
    h, w, c = shape
    if c == 1:
        return pixels.reshape(h, w, 1).copy()
    hwc = pixels.reshape(c, h, w).transpose(1, 2, 0)
    if needs_swap(channel_order, c):
        hwc = swap_rb(hwc)
    return np.ascontiguousarray(hwc)


def _to_hwc_batch(pixels: np.ndarray, shape: tuple[int, int, int], channel_order: str) -> np.ndarray:
    """(N, C*H*W) planar rows -> a fresh contiguous (N, H, W, C) RGB array."""
    h, w, c = shape
    if c == 1:
        return np.ascontiguousarray(pixels).reshape(-1, h, w, 1)
    order = swapped_order(c) if needs_swap(channel_order, c) else range(c)
    return interleave(pixels.reshape(-1, c, h, w), order)
