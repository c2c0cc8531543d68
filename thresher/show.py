"""``thresher show``: a contact sheet of images with their labels, waveform strips for audio, or
lines of values for tables and text.

Each field's feature decides how it appears: masks and boxes draw themselves on the photo,
labels caption it by class name, tensors by their values or shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from thresher.features import Feature, Image, Mask
from thresher.reader import Dataset

CELL = 96
LABEL_HEIGHT = 14
STRIP = (480, 60)
TEXT_LINE = (640, 14)  # the default bitmap font fits about 100 characters in this width


def contact_sheet(dataset: Dataset, output: Path, *, count: int = 32, columns: int = 8) -> Path:
    count = min(count, len(dataset))
    if count == 0:
        raise ValueError(f"{dataset!r} holds no records to show")
    records = [dataset[i] for i in range(count)]
    schema = dataset.schema
    pictures = [f for f in schema if isinstance(f, Image | Mask)]
    audio = schema.of_kind("audio")
    caption = [f for f in schema if f.caption(records[0][f.name]) is not None]
    if pictures:
        photo = next((f for f in pictures if isinstance(f, Image)), pictures[0])
        drawn = [f for f in schema if f is not photo and type(f).draw is not Feature.draw]
        sheet = _image_sheet(records, photo, drawn, caption, columns)
    elif audio:
        sheet = _waveform_sheet(records, audio[0].name, caption)
    else:
        sheet = _text_sheet(records, list(schema))
    output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(output)
    return output


def _caption(record: dict[str, Any], fields: list[Feature]) -> str:
    return " ".join(str(f.caption(record[f.name])) for f in fields)[:60]


def _picture(record: dict[str, Any], photo: Feature, drawn: list[Feature]) -> PILImage.Image:
    """The record's photo (or label map) in RGB at its own size, with masks and boxes drawn on it."""
    pixels = np.asarray(record[photo.name])
    if pixels.ndim == 2:  # a label map alone: its classes on black
        img = photo.draw(PILImage.new("RGB", pixels.shape[::-1]), pixels)
    else:
        img = PILImage.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).convert("RGB")
    for f in drawn:
        img = f.draw(img, record[f.name])
    return img


def _image_sheet(records: list[dict[str, Any]], photo: Feature, drawn: list[Feature], caption: list[Feature],
                 columns: int) -> PILImage.Image:
    rows = (len(records) + columns - 1) // columns
    sheet = PILImage.new("RGB", (columns * CELL, rows * (CELL + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, record in enumerate(records):
        img = _picture(record, photo, drawn)
        small = max(img.size) < CELL
        img.thumbnail((CELL, CELL), PILImage.Resampling.NEAREST if small else PILImage.Resampling.BILINEAR)
        if max(img.size) < CELL:
            scale = CELL // max(img.size)
            img = img.resize((img.width * scale, img.height * scale), PILImage.Resampling.NEAREST)
        x, y = (i % columns) * CELL, (i // columns) * (CELL + LABEL_HEIGHT)
        sheet.paste(img, (x + (CELL - img.width) // 2, y + (CELL - img.height) // 2))
        draw.text((x + 2, y + CELL), _caption(record, caption), fill="black")
    return sheet


def _waveform_sheet(records: list[dict[str, Any]], field: str, caption: list[Feature]) -> PILImage.Image:
    width, height = STRIP
    sheet = PILImage.new("RGB", (width, len(records) * (height + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, record in enumerate(records):
        samples = np.asarray(record[field], dtype=np.float32)
        top = i * (height + LABEL_HEIGHT)
        draw.text((2, top), _caption(record, caption), fill="black")
        mid = top + LABEL_HEIGHT + height // 2
        if samples.size:
            buckets = np.array_split(samples, width) if samples.size >= width else [samples]
            scale = (height / 2 - 1) / max(float(np.abs(samples).max()), 1.0)
            for x, bucket in enumerate(buckets):
                if bucket.size:
                    draw.line([(x, mid - bucket.max() * scale), (x, mid - bucket.min() * scale)], fill="navy")
        draw.line([(0, mid), (width, mid)], fill="lightgray")
    return sheet


def _text_sheet(records: list[dict[str, Any]], fields: list[Feature]) -> PILImage.Image:
    """One line per record of each field's caption (or summary): for tables and sentences."""
    width, height = TEXT_LINE
    sheet = PILImage.new("RGB", (width, len(records) * height), "white")
    draw = ImageDraw.Draw(sheet)
    for i, record in enumerate(records):
        parts = []
        for f in fields:
            caption = f.caption(record[f.name])
            parts.append(f"{f.name}: {caption if caption is not None else f.summary(record[f.name])}")
        draw.text((2, i * height), "  ".join(parts)[:100], fill="black")
    return sheet
