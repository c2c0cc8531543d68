"""PIL helpers shared by the image and mask features: open, convert, save.

PIL is imported on first use, so declaring a schema costs no image library import.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from thresher.lazy import np

if TYPE_CHECKING:
    from PIL import Image as PILImage


def open_image(data: bytes, channels: int = 3) -> PILImage.Image:
    """Encoded bytes to a decoded PIL image in RGB, or grey for one channel."""
    from PIL import Image as PILImage

    img = PILImage.open(io.BytesIO(data))
    img.load()  # reads everything: nothing is left open on the (in-memory) file
    mode = "L" if channels == 1 else "RGB"
    return img if img.mode == mode else img.convert(mode)  # convert() to the same mode would copy


def to_array(img: PILImage.Image) -> np.ndarray:
    pixels = np.asarray(img, dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def from_array(pixels: np.ndarray) -> PILImage.Image:
    from PIL import Image as PILImage

    return PILImage.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)


def decode_image(data: bytes, channels: int = 3) -> np.ndarray:
    """Encoded bytes to a uint8 HWC array (RGB, or one grey channel)."""
    return to_array(open_image(data, channels))


def save_image(img: PILImage.Image, encoding: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    if encoding == "jpeg":
        img.save(buffer, format="JPEG", quality=quality)
    else:
        img.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def encode_image(pixels: np.ndarray, encoding: str, quality: int) -> bytes:
    return save_image(from_array(pixels), encoding, quality)


def resized(img: PILImage.Image, size: tuple[int, int], resample: str) -> PILImage.Image:
    """``img`` at (height, width), bilinear for photos and nearest for label maps."""
    from PIL import Image as PILImage

    height, width = size
    if img.size == (width, height):
        return img
    method = PILImage.Resampling.NEAREST if resample == "nearest" else PILImage.Resampling.BILINEAR
    return img.resize((width, height), method)


def encoded_bytes(value: object, name: str, encoding: str) -> bytes:
    """An encoded value as bytes, else ValueError naming the field."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise ValueError(f"field {name!r}: encoded {encoding} value must be bytes, got {type(value).__name__}")
