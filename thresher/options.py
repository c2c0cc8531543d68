"""What the user asked to change about records, kept apart from the code that changes them.

The CLI builds these options for every ``prepare``, including one that finds its output already
done, so this module imports nothing but the argument checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from thresher.inputs import check_resize

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
