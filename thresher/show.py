"""``thresher show``: a contact sheet of images with their labels, or waveform strips for audio."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from thresher.reader import Dataset

CELL = 96
LABEL_HEIGHT = 14
STRIP = (480, 60)


def contact_sheet(dataset: Dataset, output: Path, *, count: int = 32, columns: int = 8) -> Path:
    count = min(count, len(dataset))
    if count == 0:
        raise ValueError(f"{dataset!r} holds no records to show")
    records = [dataset[i] for i in range(count)]
    images = dataset.schema.of_kind("image")
    audio = dataset.schema.of_kind("audio")
    caption = _caption_fields(dataset)
    if images:
        sheet = _image_sheet(records, images[0].name, caption, columns)
    elif audio:
        sheet = _waveform_sheet(records, audio[0].name, caption)
    else:
        raise ValueError("this dataset has neither images nor audio to show")
    output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(output)
    return output


def _caption_fields(dataset: Dataset) -> list[str]:
    return [f.name for f in dataset.schema if f.kind in ("int", "str")]


def _caption(record: dict[str, Any], fields: list[str]) -> str:
    return " ".join(str(record[name]) for name in fields)[:60]


def _image_sheet(records: list[dict[str, Any]], field: str, caption: list[str], columns: int) -> Image.Image:
    rows = (len(records) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * CELL, rows * (CELL + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, record in enumerate(records):
        pixels = np.asarray(record[field])
        img = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).convert("RGB")
        img.thumbnail((CELL, CELL), Image.Resampling.NEAREST if max(img.size) < CELL else Image.Resampling.BILINEAR)
        if max(img.size) < CELL:
            scale = CELL // max(img.size)
            img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
        x, y = (i % columns) * CELL, (i // columns) * (CELL + LABEL_HEIGHT)
        sheet.paste(img, (x + (CELL - img.width) // 2, y + (CELL - img.height) // 2))
        draw.text((x + 2, y + CELL), _caption(record, caption), fill="black")
    return sheet


def _waveform_sheet(records: list[dict[str, Any]], field: str, caption: list[str]) -> Image.Image:
    width, height = STRIP
    sheet = Image.new("RGB", (width, len(records) * (height + LABEL_HEIGHT)), "white")
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
