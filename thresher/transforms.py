"""Per-record options applied between recipe and codec: decode, resize, re-encode, FLAC.

Each feature says how the options change it (:meth:`Feature.stored`) and converts its values
(:meth:`Feature.convert`). These run in worker processes, so they are plain functions of
(record, plan). What they
produce is fixed by the options alone, never by which worker ran them, so output bytes
are the same for any worker count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from thresher.features import Feature, Schema
from thresher.inputs import check_resize
from thresher.recipe import BadRecord, Record

IMAGE_ENCODINGS = ("asis", "raw", "jpeg", "png")
AUDIO_ENCODINGS = ("raw", "flac")


@dataclass(frozen=True)
class ConvertOptions:
    """What the user asked to change about records; the defaults keep them as published."""

    image_encoding: str = "asis"
    resize: tuple[int, int] | None = None  # (height, width), like convert_imageset --resize_height/--resize_width
    audio_encoding: str = "raw"
    channel_order: str | None = None  # None: the recipe's (the Caffe tool's) order
    jpeg_quality: int = 95  # cv::imencode's default, as convert_imageset --encoded uses

    def __post_init__(self) -> None:
        if self.image_encoding not in IMAGE_ENCODINGS:
            raise ValueError(f"image encoding must be one of {IMAGE_ENCODINGS}, not {self.image_encoding!r}")
        if self.audio_encoding not in AUDIO_ENCODINGS:
            raise ValueError(f"audio encoding must be one of {AUDIO_ENCODINGS}, not {self.audio_encoding!r}")
        if self.channel_order not in (None, "RGB", "BGR"):
            raise ValueError(f"channel order must be RGB or BGR, not {self.channel_order!r}")
        if self.resize is not None:
            check_resize(self.resize)

    def to_json(self) -> dict[str, Any]:
        return {
            "image_encoding": self.image_encoding,
            "resize": list(self.resize) if self.resize else None,
            "audio_encoding": self.audio_encoding,
            "channel_order": self.channel_order,
            "jpeg_quality": self.jpeg_quality,
        }


def output_field(f: Feature, options: ConvertOptions) -> Feature:
    """The field as it will be stored once the options are applied (the feature decides)."""
    return f.stored(options)


def output_schema(schema: Schema, options: ConvertOptions) -> Schema:
    return Schema(tuple(output_field(f, options) for f in schema))


def needs_work(schema: Schema, options: ConvertOptions) -> bool:
    """True when some field changes form, i.e. records must pass through :func:`apply`."""
    return output_schema(schema, options) != schema


def apply(record: Record, source: Schema, target: Schema, options: ConvertOptions, where: str) -> Record | BadRecord:
    """Turn a record from the recipe's form into the stored form; bad content becomes a BadRecord."""
    from PIL import Image

    out = dict(record)
    for before, after in zip(source, target, strict=True):
        if before == after:
            continue
        try:
            out[before.name] = before.convert(record[before.name], record, after, options)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            return BadRecord(where, before.name, f"cannot convert {before.kind}: {exc}")
    return out
