"""Pixels for the synthetic inputs: cheap to make, but compressing like the real data.

Decompression and JPEG decoding cost depends on the content, so the images imitate what is
being replaced: MNIST digits are mostly-zero anti-aliased strokes (gzip ratio near the real
files'), CIFAR images are noisy gradients that gzip barely shrinks (like the real archive),
and Flowers photos are smooth colour fields with shapes and sensor-like noise that land at
tens of kB per JPEG. Everything is seeded, so a run's inputs repeat exactly.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

MNIST_SIDE = 28
CIFAR_SIDE = 32
PHOTO_SIZE = (375, 500)  # (height, width): the most common Flowers-102 shape
GLYPHS_PER_DIGIT = 100


@lru_cache(maxsize=1)
def _digit_glyphs() -> tuple[np.ndarray, np.ndarray]:
    """A pool of rotated, shifted, blurred digits (N, 28, 28) and their labels."""
    from thresher.miniature import drawn_image

    rng = np.random.default_rng(1998)
    glyphs, labels = [], []
    for digit in range(10):
        base = Image.fromarray(drawn_image(str(digit), (MNIST_SIDE, MNIST_SIDE))[:, :, 0])
        for _ in range(GLYPHS_PER_DIGIT):
            angle = float(rng.uniform(-15, 15))
            dx, dy = (int(v) for v in rng.integers(-3, 4, 2))
            moved = base.rotate(angle, resample=Image.Resampling.BILINEAR, translate=(dx, dy))
            moved = moved.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 0.9))))
            glyphs.append(np.asarray(moved, dtype=np.uint8))
            labels.append(digit)
    return np.stack(glyphs), np.asarray(labels, dtype=np.uint8)


def mnist_blocks(count: int, seed: int, block: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images (n, 28, 28) uint8, labels (n,) uint8) in blocks, so a million never sit in memory at once."""
    glyphs, glyph_labels = _digit_glyphs()
    rng = np.random.default_rng(seed)
    for start in range(0, count, block):
        n = min(block, count - start)
        pick = rng.integers(0, len(glyphs), n)
        scale = rng.uniform(0.75, 1.0, (n, 1, 1)).astype(np.float32)
        yield (glyphs[pick] * scale).astype(np.uint8), glyph_labels[pick]


def cifar_block(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(labels (n,) uint8, planes (n, 3, 32, 32) uint8): colour gradients under strong noise."""
    ramp = np.linspace(0.0, 1.0, CIFAR_SIDE, dtype=np.float32)
    slope_x = rng.uniform(-90, 90, (count, 3, 1, 1)).astype(np.float32)
    slope_y = rng.uniform(-90, 90, (count, 3, 1, 1)).astype(np.float32)
    level = rng.uniform(60, 190, (count, 3, 1, 1)).astype(np.float32)
    pixels = level + slope_x * ramp[None, None, None, :] + slope_y * ramp[None, None, :, None]
    pixels += rng.integers(-40, 41, pixels.shape).astype(np.float32)
    labels = rng.integers(0, 10, count).astype(np.uint8)
    return labels, np.clip(pixels, 0, 255).astype(np.uint8)


@lru_cache(maxsize=1)
def _noise_fields() -> tuple[np.ndarray, ...]:
    """Pre-drawn noise at three strengths; each photo crops a random window (drawing fresh noise is slow)."""
    rng = np.random.default_rng(375)
    height, width = PHOTO_SIZE
    return tuple(rng.normal(0, sigma, (2 * height, 2 * width, 3)).clip(-50, 50).astype(np.int16)
                 for sigma in (4.0, 7.0, 10.0))


def photo_jpeg(image_id: int, quality: int = 90) -> bytes:
    """One photo-like 500×375 JPEG (about 30–60 kB), the same bytes for the same id."""
    rng = np.random.default_rng(image_id)
    height, width = PHOTO_SIZE
    grid = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    img = Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        rx, ry = (int(v) for v in rng.integers(15, 90, 2))
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    img = img.filter(ImageFilter.GaussianBlur(3))
    noise = _noise_fields()[int(rng.integers(0, 3))]
    y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
    pixels = np.clip(np.asarray(img, dtype=np.int16) + noise[y:y + height, x:x + width], 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def photo_jpegs(ids: range) -> list[bytes]:
    """A run of photos; a top-level function so a process pool can share the work."""
    return [photo_jpeg(i) for i in ids]
