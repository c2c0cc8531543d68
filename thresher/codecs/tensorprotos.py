"""Caffe2 ``TensorProtos`` codec: one ``TensorProto`` per schema field, in schema order (``caffe2.proto``).

Each proto sets ``data_type`` explicitly (its default is FLOAT, which every reader would misread) and
no ``name``, like the Caffe2 converters:

- raw image: ``BYTE``, dims ``[H, W, C]``, interleaved HWC ``byte_data`` in the stored channel order
  (``make_cifar_db`` / ``make_image_db --raw``);
- encoded image, encoded audio, str: ``STRING``, dims ``[1]``, one ``string_data`` entry;
- int: ``INT32``, dims ``field.dims`` (``[1]`` like ``make_cifar_db``, none like ``make_mnist_db``);
- raw audio: ``INT16``, dims ``[N]``, samples in packed ``int32_data``.

Raw audio follows Caffe2 exactly: ``TensorDeserializer`` reads INT16 only from ``int32_data``, so
that is where the samples go, which keeps the value readable by ``TensorProtosDBInput``. The price
is size: int32 varints take 1-3 bytes for a non-negative sample and 10 for a negative one, about 6
bytes per sample for speech against 2 for PCM. Use ``flac`` encoding when size matters.

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
    as_bytes,
    check_image,
    check_int32_bounds,
    checked_int32,
    decode_each,
    needs_swap,
    split_fixed,
    swap_rb,
    varint,
    varint_columns,
)
from thresher.codecs.messages import DataType, TensorProtos
from thresher.errors import CorruptShardError, UnsupportedCodecError
from thresher.schema import Field, Schema

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


def _type_name(value: int) -> str:
    try:
        return DataType(value).name
    except ValueError:
        return f"data_type {value}"


class _Plan:
    """Per (schema, channel order): one encoder per field and the fast image+label decode layout."""

    def __init__(self, schema: Schema, channel_order: str) -> None:
        TensorProtosCodec.check(schema)
        self.channel_order = channel_order
        self.names = schema.names
        self.encoders: list[Callable[[Any], bytes]] = [self._encoder(f) for f in schema]
        self.headers: dict[tuple[int, ...], bytes] = {}
        # The hot layout: a fixed-shape raw image followed by an int label.
        self.image: Field | None = None
        self.label: Field | None = None
        self.labels: dict[bytes, int] = {}  # canonical label entry -> label (filled by decode)
        f = schema.fields
        if (
            len(f) == 2
            and f[0].kind == "image"
            and not f[0].is_encoded
            and f[0].shape is not None
            and len(f[0].shape) == 3
            and f[1].kind == "int"
        ):
            needs_swap(channel_order, f[0].shape[2])
            self.image, self.label = f
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

    def _encoder(self, field: Field) -> Callable[[Any], bytes]:
        order = self.channel_order
        if field.kind == "image" and not field.is_encoded:

            def encode_image(value: Any) -> bytes:
                img = check_image(value, field)
                if needs_swap(order, img.shape[2]):
                    img = swap_rb(img)
                return self.header(img.shape) + img.tobytes()

            return encode_image
        if field.kind == "audio" and not field.is_encoded:

            def encode_audio(value: Any) -> bytes:
                samples = _check_audio(value, field)
                body = b"\x08" + varint(len(samples)) + b"\x10\x09"
                if len(samples) == 0:
                    return _part(body)
                packed = pack_varints(samples)
                return _part(body + b"\x22" + varint(len(packed)), packed)

            return encode_audio
        if field.kind == "int":
            cache: dict[Any, bytes] = {}
            head = dims_bytes(field.dims) + _INT_TYPE

            def encode_int(value: Any) -> bytes:
                try:
                    entry = cache.get(value)
                except TypeError:
                    entry = None
                if entry is None:
                    v = checked_int32(value, field)
                    vb = varint(v)
                    entry = _part(head + varint(len(vb)), vb)
                    if len(cache) < _CACHE_LIMIT:
                        cache[v] = entry
                return entry

            return encode_int
        if field.kind == "str":
            return lambda value: string_entry(_check_str(value, field).encode("utf-8"))
        return lambda value: string_entry(as_bytes(value, field))

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

    @staticmethod
    def check(schema: Schema, dataset: str | None = None) -> None:
        """Every kind fits; refuse only an empty schema, non-scalar int dims and ints beyond int32."""
        who = dataset or "this dataset"
        if not len(schema):
            raise UnsupportedCodecError(f"tensorprotos needs at least one field; {who} has none")
        for f in schema.of_kind("int"):
            if math.prod(f.dims) != 1:
                raise UnsupportedCodecError(
                    f"field {f.name!r} holds one int but its dims {f.dims} describe {math.prod(f.dims)} values"
                )
            check_int32_bounds(f, "tensorprotos")

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
            t = protos.protos.add()
            value = record[field.name]
            if field.kind == "image" and not field.is_encoded:
                img = check_image(value, field)
                if needs_swap(channel_order, img.shape[2]):
                    img = swap_rb(img)
                t.dims.extend(img.shape)
                t.data_type = DataType.BYTE
                t.byte_data = np.ascontiguousarray(img).tobytes()
            elif field.kind == "audio" and not field.is_encoded:
                samples = _check_audio(value, field)
                t.dims.append(len(samples))
                t.data_type = DataType.INT16
                t.int32_data.extend(samples.tolist())
            elif field.kind == "int":
                t.dims.extend(field.dims)
                t.data_type = DataType.INT32
                t.int32_data.append(checked_int32(value, field))
            else:
                data = _check_str(value, field).encode("utf-8") if field.kind == "str" else as_bytes(value, field)
                t.dims.append(1)
                t.data_type = DataType.STRING
                t.string_data.append(data)
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
                return {plan.image.name: _from_stored(img, channel_order), plan.label.name: label}
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
        return {f.name: _decode_tensor(t, f, channel_order) for f, t in zip(schema, protos, strict=True)}

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


def _check_audio(value: Any, field: Field) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype != np.int16 or value.ndim != 1:
        got = f"{value.dtype} array of shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
        raise ValueError(f"field {field.name!r}: raw audio must be an int16 (N,) array, got {got}")
    return value


def _check_str(value: Any, field: Field) -> str:
    if not isinstance(value, str):
        raise ValueError(f"field {field.name!r}: expected str, got {type(value).__name__}")
    return value


def _from_stored(hwc: np.ndarray, channel_order: str) -> np.ndarray:
    """Stored HWC pixels -> a fresh RGB array."""
    if needs_swap(channel_order, hwc.shape[2]):
        return np.ascontiguousarray(swap_rb(hwc))
    return hwc.copy()


def _decode_tensor(t: Any, field: Field, channel_order: str) -> Any:
    """One TensorProto -> the field's record value, or CorruptShardError naming the mismatch."""
    dims = list(t.dims)

    def expect(data_type: DataType) -> None:
        if t.data_type != data_type:
            raise CorruptShardError(
                f"field {field.name!r}: tensor is {_type_name(t.data_type)}, expected {data_type.name}"
            )

    def one_string() -> bytes:
        expect(DataType.STRING)
        if len(t.string_data) != 1:
            raise CorruptShardError(f"field {field.name!r}: expected 1 string, tensor holds {len(t.string_data)}")
        return t.string_data[0]

    if field.kind == "image" and not field.is_encoded:
        expect(DataType.BYTE)
        if len(dims) not in (2, 3):
            raise CorruptShardError(f"field {field.name!r}: image dims {dims} are not [H, W] or [H, W, C]")
        shape = (dims[0], dims[1], dims[2] if len(dims) == 3 else 1)
        if min(shape) <= 0:
            raise CorruptShardError(f"field {field.name!r}: image dims {dims} must be positive")
        if len(t.byte_data) != math.prod(shape):
            raise CorruptShardError(
                f"field {field.name!r}: byte_data holds {len(t.byte_data)} bytes but dims {dims} need {math.prod(shape)}"
            )
        if field.shape is not None and shape != tuple(field.shape):
            raise CorruptShardError(f"field {field.name!r}: image is {shape} but the schema says {field.shape}")
        try:
            img = np.frombuffer(t.byte_data, np.uint8).reshape(shape)
            return _from_stored(img, channel_order)
        except ValueError as exc:
            raise CorruptShardError(f"field {field.name!r}: {exc}") from None
    if field.kind == "audio" and not field.is_encoded:
        expect(DataType.INT16)
        samples = np.fromiter(t.int32_data, np.int64, len(t.int32_data))
        if len(dims) != 1 or dims[0] != len(samples):
            raise CorruptShardError(f"field {field.name!r}: dims {dims} but int32_data holds {len(samples)} samples")
        if len(samples) and (samples.min() < -32768 or samples.max() > 32767):
            raise CorruptShardError(f"field {field.name!r}: INT16 tensor holds values outside int16")
        return samples.astype(np.int16)
    if field.kind == "int":
        expect(DataType.INT32)
        if math.prod(dims) != 1 or len(t.int32_data) != 1:
            raise CorruptShardError(
                f"field {field.name!r}: expected one int, tensor has dims {dims} and {len(t.int32_data)} values"
            )
        return t.int32_data[0]
    if field.kind == "str":
        try:
            return one_string().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptShardError(f"field {field.name!r}: string is not UTF-8 ({exc})") from None
    return one_string()
