"""Caffe2 ``TensorProtos`` codec: one ``TensorProto`` per schema field, in schema order (``caffe2.proto``).

Each feature says which tensor holds its value (:meth:`Feature.to_tensor`: data type, dims,
data); this module writes that tensor. Each proto sets ``data_type`` explicitly (its default is
FLOAT, which every reader would misread) and no ``name``, like the Caffe2 converters. Data goes
where Caffe2's ``TensorDeserializer`` reads it: ``float_data`` for FLOAT, ``double_data`` for
DOUBLE, ``int64_data`` for INT64, ``byte_data`` for BYTE, ``string_data`` for STRING and packed
``int32_data`` for INT32, BOOL, UINT8, INT8, UINT16 and INT16.

The protobuf path (``encode_reference``/``decode_reference``) defines the bytes; ``encode`` writes
the same bytes by hand, and ``decode``/``decode_batch`` slice the hot image+label layout directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from thresher.codecs.base import (
    BatchLayout,
    PlannedCodec,
    ValueLayout,
    decode_each,
    needs_swap,
    split_fixed,
    swap_rb,
    varint,
    varint_columns,
)
from thresher.codecs.messages import DataType, TensorProtos
from thresher.errors import CorruptShardError, UnsupportedCodecError
from thresher.features import Feature, Image, Integer, Schema, TensorData
from thresher.features.channels import from_stored

_CACHE_LIMIT = 1 << 16
_INT_TYPE = b"\x10\x02\x22"  # data_type=INT32, then the packed int32_data tag


def _part(body_head: bytes, payload: bytes = b"") -> bytes:
    """One ``protos`` entry of a TensorProtos: tag 0x0a, length, body."""
    return b"".join((b"\x0a", varint(len(body_head) + len(payload)), body_head, payload))


def image_header(shape: tuple[int, ...]) -> bytes:
    """Bytes before the pixels of a raw image entry: tag, length, dims, BYTE, byte_data tag+length."""
    h, w, c = shape
    n = h * w * c
    inner = b"".join((b"\x08", varint(h), b"\x08", varint(w), b"\x08", varint(c), b"\x10\x03\x2a", varint(n)))
    return b"\x0a" + varint(len(inner) + n) + inner


def dims_bytes(dims: Sequence[int]) -> bytes:
    return b"".join(b"\x08" + varint(d) for d in dims)


def string_entry(data: bytes) -> bytes:
    return _part(b"\x08\x01\x10\x04\x32" + varint(len(data)), data)


def pack_varints(values: np.ndarray) -> bytes:
    """Packed int32/int64 varints of an integer array (negatives as 10-byte two's complement)."""
    out = []
    steps = (7 * np.arange(10)).astype(np.uint64)
    for chunk in np.array_split(values, max(1, math.ceil(len(values) / 262144))):
        u = chunk.astype(np.int64).view(np.uint64)
        lens = 1 + np.sum((u[:, None] >> steps[1:]) != 0, axis=1)
        groups = ((u[:, None] >> steps) & np.uint64(0x7F)).astype(np.uint8)
        idx = np.arange(10)
        groups |= np.where(idx < (lens - 1)[:, None], np.uint8(0x80), np.uint8(0))
        out.append(groups[idx < lens[:, None]].tobytes())
    return b"".join(out)


def unpack_varints(data: bytes) -> np.ndarray:
    """Inverse of :func:`pack_varints`: int64 values; ValueError if the bytes are not whole varints."""
    b = np.frombuffer(data, np.uint8)
    if len(b) == 0:
        return np.zeros(0, np.int64)
    ends = np.flatnonzero(b < 0x80)
    if len(ends) == 0 or ends[-1] != len(b) - 1:
        raise ValueError("packed varints end in the middle of a value")
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lens = ends - starts + 1
    if lens.max() > 10:
        raise ValueError("varint longer than 10 bytes")
    shifts = (7 * (np.arange(len(b)) - np.repeat(starts, lens))).astype(np.uint64)
    values = np.bitwise_or.reduceat((b & 0x7F).astype(np.uint64) << shifts, starts)
    return values.view(np.int64)


_HEADS: dict[tuple[int, tuple[int, ...], int], bytes] = {}  # (BYTE, dims, size) -> bytes before the payload


def tensor_entry(t: TensorData) -> bytes:
    """One ``protos`` entry holding ``t``, fields in protobuf's ascending field-number order."""
    if t.data_type == DataType.BYTE:  # raw pixels: the same few shapes again and again
        payload = t.data if type(t.data) is bytes else bytes(t.data)
        key = (t.data_type, t.dims, len(payload))
        prefix = _HEADS.get(key)
        if prefix is None:
            head = dims_bytes(t.dims) + b"\x10\x03\x2a" + varint(len(payload))
            prefix = b"\x0a" + varint(len(head) + len(payload)) + head
            if len(_HEADS) < 256:
                _HEADS[key] = prefix
        return prefix + payload
    head = dims_bytes(t.dims) + b"\x10" + varint(t.data_type)
    if t.data_type == DataType.STRING:
        payload = b"".join([b"\x32" + varint(len(v)) + v for v in t.data])
    else:
        tag, packed = _packed(t)
        payload = tag + varint(len(packed)) + packed if packed else b""
    return b"".join((b"\x0a", varint(len(head) + len(payload)), head, payload))


def _packed(t: TensorData) -> tuple[bytes, bytes]:
    """(tag, packed bytes) of a numeric tensor's repeated field."""
    if t.data_type == DataType.FLOAT:
        return b"\x1a", np.asarray(t.data, "<f4").tobytes()
    if t.data_type == DataType.DOUBLE:
        return b"\x4a", np.asarray(t.data, "<f8").tobytes()
    values = np.asarray(t.data, np.int64)
    return (b"\x52" if t.data_type == DataType.INT64 else b"\x22"), pack_varints(values) if len(values) else b""


def fill_proto(proto: Any, t: TensorData) -> None:
    """Set a protobuf ``TensorProto`` from ``t`` (the reference the hand-written bytes must equal)."""
    proto.dims.extend(t.dims)
    proto.data_type = t.data_type
    if t.data_type == DataType.BYTE:
        proto.byte_data = bytes(t.data)
    elif t.data_type == DataType.STRING:
        proto.string_data.extend(t.data)
    else:
        target = {DataType.FLOAT: proto.float_data, DataType.DOUBLE: proto.double_data,
                  DataType.INT64: proto.int64_data}.get(t.data_type, proto.int32_data)
        target.extend(np.asarray(t.data).tolist())


def tensor_data(proto: Any) -> TensorData:
    """A parsed ``TensorProto`` as plain values, taking the field its data type uses."""
    dt = proto.data_type
    if dt == DataType.BYTE:
        data: Any = proto.byte_data
    elif dt == DataType.STRING:
        data = list(proto.string_data)
    elif dt == DataType.FLOAT:
        data = np.array(proto.float_data, np.float32)
    elif dt == DataType.DOUBLE:
        data = np.array(proto.double_data, np.float64)
    elif dt == DataType.INT64:
        data = np.array(proto.int64_data, np.int64)
    else:
        data = np.fromiter(proto.int32_data, np.int64, len(proto.int32_data))
    return TensorData(dt, tuple(proto.dims), data)


class _Plan:
    """Per (schema, channel order): one encoder per field and the fast image+label decode layout."""

    def __init__(self, schema: Schema, channel_order: str) -> None:
        TensorProtosCodec.check(schema)
        self.channel_order = channel_order
        self.names = schema.names
        self.encoders: list[Callable[[Any], bytes]] = [self._encoder(f) for f in schema]
        self.headers: dict[tuple[int, ...], bytes] = {}
        # The hot layout: a fixed-shape raw image followed by an int label.
        self.image: Image | None = None
        self.label: Integer | None = None
        self.labels: dict[bytes, int] = {}  # canonical label entry -> label (filled by decode)
        self.layout: ValueLayout | None = None  # made by value_layout when a reader asks
        f = schema.fields
        if (
            len(f) == 2
            and type(f[0]) is Image
            and not f[0].is_encoded
            and f[0].shape is not None
            and len(f[0].shape) == 3
            and isinstance(f[1], Integer)
            and f[1].scalar
        ):
            needs_swap(channel_order, f[0].shape[2])
            self.image, self.label = f[0], f[1]
            self.shape: tuple[int, ...] = tuple(f[0].shape)
            self.head = self.header(self.shape)
            self.int_head = dims_bytes(f[1].dims) + _INT_TYPE

    def header(self, shape: tuple[int, ...]) -> bytes:
        head = self.headers.get(shape)
        if head is None:
            head = image_header(shape)
            if len(self.headers) < 256:
                self.headers[shape] = head
        return head

    def _encoder(self, field: Feature) -> Callable[[Any], bytes]:
        order = self.channel_order
        if not getattr(field, "cacheable", False):
            return lambda value: tensor_entry(field.to_tensor(value, order))
        cache: dict[Any, bytes] = {}

        def encode_cached(value: Any) -> bytes:  # labels repeat: build each entry once
            try:
                entry = cache.get(value)
            except TypeError:
                entry = None
            if entry is None:
                entry = tensor_entry(field.to_tensor(value, order))
                if len(cache) < _CACHE_LIMIT:
                    cache[value] = entry
            return entry

        return encode_cached

    def label_entry(self, label: int) -> bytes:
        vb = varint(label)
        return _part(self.int_head + varint(len(vb)), vb)


class TensorProtosCodec(PlannedCodec):
    """Caffe2 ``TensorProtos`` values; see the module docstring."""

    name = "tensorprotos"
    plan_type = _Plan

    def batch_layout(self, plan: _Plan) -> BatchLayout | None:
        if plan.image is None or plan.label is None:
            return None
        return BatchLayout(plan.image.name, plan.label.name, plan.shape, plan.head, False, plan.encoders[1])

    def value_layout(self, schema: Schema, channel_order: str) -> ValueLayout | None:
        plan = self._plan(schema, channel_order)
        if plan.image is None or plan.label is None:
            return None
        if plan.layout is None:
            shape = plan.shape
            plan.layout = ValueLayout(plan.image.name, plan.label.name, plan.head, shape,  # type: ignore[arg-type]
                                      _tail_parser(plan.int_head),
                                      lambda pixels: from_stored(pixels.reshape(shape), channel_order))
        return plan.layout

    @staticmethod
    def check(schema: Schema, dataset: str | None = None) -> None:
        """Refuse an empty schema and any field whose values a TensorProto cannot hold."""
        who = dataset or "this dataset"
        if not len(schema):
            raise UnsupportedCodecError(f"tensorprotos needs at least one field; {who} has none")
        for f in schema:
            f.check_tensorprotos()

    def _plan(self, schema: Schema, channel_order: str) -> _Plan:
        return self._plans.get(schema, channel_order)

    # ------------------------------------------------------------------ encode

    def encode(self, record: dict, schema: Schema, channel_order: str) -> bytes:
        """Hand-written wire bytes; byte-identical to :meth:`encode_reference`."""
        plan = self._plan(schema, channel_order)
        if plan.image is not None:  # the hot image+label layout, without the per-field loop
            return plan.encoders[0](record[plan.image.name]) + plan.encoders[1](record[plan.label.name])
        return b"".join([enc(record[name]) for enc, name in zip(plan.encoders, plan.names, strict=True)])

    def encode_reference(self, record: dict, schema: Schema, channel_order: str) -> bytes:
        """The definition of the bytes, through the protobuf messages."""
        self._plan(schema, channel_order)  # validates schema and channel order
        protos = TensorProtos()
        for field in schema:
            fill_proto(protos.protos.add(), field.to_tensor(record[field.name], channel_order))
        return protos.SerializeToString()

    # ------------------------------------------------------------------ decode

    def decode(self, value: bytes, schema: Schema, channel_order: str) -> dict:
        """Fast slice for the image+label layout thresher writes; anything else goes through protobuf."""
        plan = self._plan(schema, channel_order)
        if type(value) is not bytes:
            value = bytes(value)
        if plan.image is not None and value.startswith(plan.head):
            h, w, c = plan.shape
            n = h * w * c
            end = len(plan.head) + n
            tail = value[end:]
            label = plan.labels.get(tail)
            if label is not None:
                img = np.frombuffer(value, np.uint8, n, len(plan.head)).reshape(h, w, c)
                return {plan.image.name: from_stored(img, channel_order), plan.label.name: label}
            record = self.decode_reference(value, schema, channel_order)
            if len(plan.labels) < _CACHE_LIMIT:  # the entry encode writes for this label means this label
                label = record[plan.label.name]
                plan.labels[plan.label_entry(label)] = label
            return record
        return self.decode_reference(value, schema, channel_order)

    def decode_reference(self, value: bytes, schema: Schema, channel_order: str) -> dict:
        """Parse with protobuf and check every tensor against its field."""
        self._plan(schema, channel_order)
        try:
            protos = TensorProtos.FromString(bytes(value)).protos
        except (DecodeError, ValueError) as exc:
            raise CorruptShardError(f"value is not a Caffe2 TensorProtos ({len(value)} bytes): {exc}") from None
        if len(protos) != len(schema):
            raise CorruptShardError(
                f"value holds {len(protos)} tensors but the schema has {len(schema)} ({', '.join(schema.names)})"
            )
        return {f.name: f.from_tensor(tensor_data(t), channel_order) for f, t in zip(schema, protos, strict=True)}

    def decode_batch(self, values: Sequence[bytes], schema: Schema, channel_order: str) -> dict[str, np.ndarray]:
        """Decode many values into columns: images (N, H, W, C) uint8 and labels (N,) int64.

        For a fixed-shape raw image followed by an int label the values are checked and sliced with
        numpy over one joined buffer; values not in that exact layout are decoded one by one (and may
        raise CorruptShardError). Other schemas decode one by one and stack (object arrays where
        shapes differ).
        """
        plan = self._plan(schema, channel_order)
        if plan.image is None or plan.label is None or not values:
            return decode_each(values, schema, lambda v: self.decode(v, schema, channel_order))
        h, w, c = plan.shape
        payload, labels, bad = split_fixed(values, plan.head, h * w * c, _tail_parser(plan.int_head))
        images = np.ascontiguousarray(payload).reshape(-1, h, w, c)
        if needs_swap(channel_order, c):
            images = np.ascontiguousarray(swap_rb(images))
        for i in bad.tolist():
            record = self.decode(values[i], schema, channel_order)
            images[i] = record[plan.image.name]
            labels[i] = record[plan.label.name]
        return {plan.image.name: images, plan.label.name: labels}


def _tail_parser(int_head: bytes) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Reads labels from (N, T) tails that should be one INT32 entry: ``0a L <dims> 10 02 22 k <varint>``."""
    expected = np.frombuffer(int_head, np.uint8)
    il = len(int_head)

    def parse(tails: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size = tails.shape[1]
        k = size - il - 3
        if k < 1:
            return np.zeros(len(tails), np.int64), np.zeros(len(tails), bool)
        labels, ok = varint_columns(tails[:, il + 3 :])
        ok &= (tails[:, 0] == 0x0A) & (tails[:, 1] == size - 2) & (tails[:, il + 2] == k)
        ok &= (tails[:, 2 : il + 2] == expected).all(axis=1)
        return labels, ok

    return parse
