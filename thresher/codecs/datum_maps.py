"""Datum for segmentation: an image and its label maps, one Caffe ``Datum`` each, for one LMDB each.

A Caffe segmentation net reads the photo through one Data layer and the label map through
another, both over LMDBs with the same keys. So a record of one image and one or more
:class:`~thresher.features.Mask` fields becomes :class:`~thresher.formats.parts.FieldParts`:
the image Datum exactly as for a classified image but with label 0, then per mask a raw
1-channel Datum (channels 1, height, width, the uint8 class indexes, label 0,
``encoded=false``). Indexes are written raw because Caffe decodes an encoded Datum with
OpenCV, which turns a palette PNG into colours and loses the classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from thresher.codecs.base import varint
from thresher.codecs.messages import Datum
from thresher.errors import CorruptShardError
from thresher.features import Image, Integer, Mask, Schema
from thresher.formats.parts import FieldParts

_ZERO_LABEL_RAW = b"\x28\x00\x38\x00"  # label 0, encoded=false


def maps_fields(schema: Schema) -> tuple[Image, tuple[Mask, ...]] | None:
    """(image, masks) when the schema is one image first, then only masks; None otherwise."""
    fields = schema.fields
    if len(fields) < 2 or type(fields[0]) is not Image or not all(isinstance(f, Mask) for f in fields[1:]):
        return None
    return fields[0], fields[1:]  # type: ignore[return-value]


class MapsPlan:
    """What encoding one (schema, channel order) of image + masks needs."""

    def __init__(self, schema: Schema, channel_order: str) -> None:
        found = maps_fields(schema)
        assert found is not None
        self.image, self.masks = found
        # The image's Datum is the classified-image Datum of label 0.
        self.pair = Schema((self.image, Integer("__label__", minimum=0, maximum=0)))
        self.channel_order = channel_order


def encode_maps(codec: Any, plan: MapsPlan, record: dict) -> FieldParts:
    """The image Datum, then one raw 1-channel Datum per mask."""
    image = codec.encode({plan.image.name: record[plan.image.name], "__label__": 0}, plan.pair, plan.channel_order)
    return FieldParts([image, *(mask_datum(mask, record[mask.name]) for mask in plan.masks)])


def mask_datum(mask: Mask, value: Any) -> bytes:
    """A raw Datum of the class indexes: channels 1, height, width, data, label 0, encoded false."""
    indexes = np.ascontiguousarray(mask.decoded(mask.check_value(value)), dtype=np.uint8)
    if indexes.ndim != 2:
        raise ValueError(f"field {mask.name!r}: a label map is H×W, not {indexes.shape}")
    h, w = indexes.shape
    return b"".join((b"\x08\x01\x10", varint(h), b"\x18", varint(w), b"\x22", varint(h * w),
                     indexes.tobytes(), _ZERO_LABEL_RAW))


def decode_maps(codec: Any, plan: MapsPlan, value: Any) -> dict:
    """A record from the values of its stores; the masks come back as uint8 H×W index arrays."""
    parts = value.parts() if isinstance(value, FieldParts) else None
    if parts is None or len(parts) != 1 + len(plan.masks):
        raise CorruptShardError(f"expected {1 + len(plan.masks)} datums (image and label maps) for one record")
    record = {plan.image.name: codec.decode(parts[0], plan.pair, plan.channel_order)[plan.image.name]}
    for mask, part in zip(plan.masks, parts[1:], strict=True):
        record[mask.name] = mask_array(mask, part)
    return record


def mask_array(mask: Mask, value: bytes) -> np.ndarray:
    """A 1-channel raw Datum back to (H, W) indexes, checked."""
    try:
        datum = Datum.FromString(bytes(value))
    except (DecodeError, ValueError) as exc:
        raise CorruptShardError(f"field {mask.name!r}: value is not a Caffe Datum ({len(value)} bytes): {exc}") from None
    c, h, w = datum.channels, datum.height, datum.width
    if datum.encoded or c != 1 or h <= 0 or w <= 0 or len(datum.data) != h * w:
        raise CorruptShardError(f"field {mask.name!r}: label map datum has channels={c}, height={h}, width={w}, "
                                f"encoded={datum.encoded} and {len(datum.data)} bytes; expected 1 raw channel")
    if mask.shape is not None and (h, w) != tuple(mask.shape):
        raise CorruptShardError(f"field {mask.name!r}: label map is {h}x{w}, the schema says {mask.shape}")
    return np.frombuffer(datum.data, np.uint8).reshape(h, w).copy()
