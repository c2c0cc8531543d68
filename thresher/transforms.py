"""Per-record options applied between recipe and codec: decode, resize, re-encode, FLAC.

These run in worker processes, so they are plain functions of (record, plan). What they
produce is fixed by the options alone, never by which worker ran them, so output bytes
are the same for any worker count.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from thresher.inputs import check_resize
from thresher.recipe import BadRecord, Record
from thresher.schema import Field, Schema

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


def output_field(f: Field, options: ConvertOptions) -> Field:
    """The field as it will be stored once the options are applied.

    ``asis`` keeps the published form unless a resize forces a decode, in which case the result
    is raw pixels, like ``convert_imageset --resize_*`` without ``--encoded``.
    """
    if f.kind == "audio":
        return replace(f, encoding=options.audio_encoding)
    if f.kind != "image":
        return f
    shape = f.shape
    if options.resize is not None:
        shape = (*options.resize, f.shape[2] if f.shape else 3)
    if options.image_encoding == "asis":
        encoding = "raw" if options.resize is not None else f.encoding
    else:
        encoding = options.image_encoding
    return replace(f, encoding=encoding, shape=shape)


def output_schema(schema: Schema, options: ConvertOptions) -> Schema:
    return Schema(tuple(output_field(f, options) for f in schema))


def needs_work(schema: Schema, options: ConvertOptions) -> bool:
    """True when some field changes form, i.e. records must pass through :func:`apply`."""
    return output_schema(schema, options) != schema


def apply(record: Record, source: Schema, target: Schema, options: ConvertOptions, where: str) -> Record | BadRecord:
    """Turn a record from the recipe's form into the stored form; bad content becomes a BadRecord."""
    out = dict(record)
    for before, after in zip(source, target, strict=True):
        if before == after:
            continue
        value = record[before.name]
        try:
            if before.kind == "image":
                out[before.name] = _image(value, before, after, options)
            elif before.kind == "audio":
                out[before.name] = _audio(value, record, after)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            return BadRecord(where, before.name, f"cannot convert {before.kind}: {exc}")
    return out


def open_image(data: bytes, channels: int = 3) -> Image.Image:
    """Encoded bytes to a decoded PIL image in RGB, or grey for one channel."""
    img = Image.open(io.BytesIO(data))
    img.load()  # reads everything: nothing is left open on the (in-memory) file
    mode = "L" if channels == 1 else "RGB"
    return img if img.mode == mode else img.convert(mode)  # convert() to the same mode would copy


def to_array(img: Image.Image) -> np.ndarray:
    pixels = np.asarray(img, dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def from_array(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)


def decode_image(data: bytes, channels: int = 3) -> np.ndarray:
    """Encoded bytes to a uint8 HWC array (RGB, or one grey channel)."""
    return to_array(open_image(data, channels))


def save_image(img: Image.Image, encoding: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    if encoding == "jpeg":
        img.save(buffer, format="JPEG", quality=quality)
    else:
        img.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def encode_image(pixels: np.ndarray, encoding: str, quality: int) -> bytes:
    return save_image(from_array(pixels), encoding, quality)


def _image(value: Any, before: Field, after: Field, options: ConvertOptions) -> Any:
    """Decode, resize, re-encode, staying in PIL images: every trip through numpy copies the
    whole picture, and with several workers that memory traffic, not the codec, sets the pace."""
    channels = before.shape[2] if before.shape else 3
    img = open_image(value, channels) if before.is_encoded else from_array(np.asarray(value, dtype=np.uint8))
    if options.resize is not None:
        height, width = options.resize
        if img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.BILINEAR)
    if after.is_encoded:
        return save_image(img, after.encoding, options.jpeg_quality)
    return np.ascontiguousarray(to_array(img))


def _audio(value: Any, record: Record, after: Field) -> Any:
    import soundfile

    samples = np.asarray(value, dtype=np.int16)
    rate = int(record.get("sample_rate", 16000))
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def decode_audio(data: bytes) -> np.ndarray:
    import soundfile

    samples, _ = soundfile.read(io.BytesIO(data), dtype="int16")
    return samples
