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
# Pillow's bilinear filter widens with the scale factor (antialiased); OpenCV's INTER_LINEAR, which
# Caffe's convert_imageset uses, samples 2×2 pixels whatever the scale. Pillow is the default: it
# is a core dependency and its downscaled photos do not alias; opencv is the optional extra.
RESAMPLERS = ("pillow", "opencv")
FILTERS = {"pillow": "photos: Pillow BILINEAR (antialiased); label maps: nearest",
           "opencv": "photos: OpenCV INTER_LINEAR (as convert_imageset); label maps: nearest"}


@dataclass(frozen=True)
class ConvertOptions:
    """What the user asked to change about records; the defaults keep them as published."""

    image_encoding: str = "asis"
    resize: tuple[int, int] | None = None  # (height, width), like convert_imageset --resize_height/--resize_width
    audio_encoding: str = "raw"
    channel_order: str | None = None  # None: the recipe's (the Caffe tool's) order
    jpeg_quality: int = 95  # cv::imencode's default, as convert_imageset --encoded uses
    resize_short: int | None = None  # the shorter side, aspect kept (torchvision's Resize(N)); not with resize
    resampler: str = "pillow"  # how photos are resized (label maps always keep their nearest pixel)

    def __post_init__(self) -> None:
        if self.image_encoding not in IMAGE_ENCODINGS:
            raise ValueError(f"image encoding must be one of {IMAGE_ENCODINGS}, not {self.image_encoding!r}")
        if self.audio_encoding not in AUDIO_ENCODINGS:
            raise ValueError(f"audio encoding must be one of {AUDIO_ENCODINGS}, not {self.audio_encoding!r}")
        if self.channel_order not in (None, "RGB", "BGR"):
            raise ValueError(f"channel order must be RGB or BGR, not {self.channel_order!r}")
        if self.resize is not None:
            check_resize(self.resize)
        if self.resize_short is not None:
            if self.resize is not None:
                raise ValueError("resize to HxW or to a shorter side, not both")
            check_resize((self.resize_short, self.resize_short))
        if self.resampler not in RESAMPLERS:
            raise ValueError(f"resampler must be one of {RESAMPLERS}, not {self.resampler!r}")

    @property
    def resizes(self) -> bool:
        return self.resize is not None or self.resize_short is not None

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) an image of this size is resized to.

        For a shorter side N the longer becomes ``int(N * longer / shorter)``, truncated as
        torchvision's ``Resize(N)`` does, so a model trained on either sees the same sizes.
        """
        if self.resize is not None:
            return self.resize
        if self.resize_short is None:
            return height, width
        short = self.resize_short
        if height <= width:
            return short, int(short * width / height)
        return int(short * height / width), short

    def to_json(self) -> dict[str, Any]:
        return {
            "image_encoding": self.image_encoding,
            "resize": list(self.resize) if self.resize else None,
            "audio_encoding": self.audio_encoding,
            "channel_order": self.channel_order,
            "jpeg_quality": self.jpeg_quality,
            # Only when asked or when it decides bytes, so outputs made before these options keep their generation.
            **({"resize_short": self.resize_short} if self.resize_short is not None else {}),
            **({"resampler": self.resampler, "filter": FILTERS[self.resampler]} if self.resizes else {}),
        }

