"""``Mask``: a label map whose pixels are class indexes (a segmentation), never resampled between them."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from thresher.errors import CorruptShardError, UnsupportedCodecError
from thresher.features.base import BYTE, Feature, TensorData
from thresher.features.colours import class_colour
from thresher.features.image import Encodable, vlen_bytes
from thresher.features.pictures import resized
from thresher.lazy import np

if TYPE_CHECKING:
    from thresher.transforms import ConvertOptions

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INDEX_MODES = ("P", "L", "1")  # modes whose pixel values are the indexes themselves


def mask_indexes(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 (H, W) indexes, palette indexes kept as they are (never mapped to colours)."""
    from PIL import Image as PILImage

    img = PILImage.open(io.BytesIO(data))
    img.load()
    if img.mode not in INDEX_MODES:
        raise ValueError(f"a mask PNG must hold indexes (palette or grey), this one is {img.mode}")
    return np.asarray(img, dtype=np.uint8)


@dataclass(frozen=True)
class Mask(Encodable):
    """uint8 (H, W) class indexes (``shape`` when fixed), or PNG bytes with ``encoding="png"``.

    ``--resize`` uses nearest-neighbour so every pixel keeps a class that was there; a palette
    PNG stays a palette PNG; no channel order applies. ``names`` optionally name the indexes.
    """

    shape: tuple[int, int] | None = None
    names: tuple[str, ...] = ()

    kind: ClassVar[str] = "mask"
    resample: ClassVar[str | None] = "nearest"

    def __post_init__(self) -> None:
        if self.encoding not in ("raw", "png"):
            raise ValueError(f"field {self.name!r}: a mask is raw or png (lossless), not {self.encoding!r}")

    def problem(self, value: Any) -> str | None:
        if self.is_encoded:
            problem = self.encoded_problem(value)
            if problem is None and bytes(value[:8]) != PNG_SIGNATURE:
                return "expected PNG bytes"
            return problem
        if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 2:
            return "expected a uint8 H×W array of class indexes"
        if self.shape is not None and tuple(value.shape) != tuple(self.shape):
            return f"mask shape {tuple(value.shape)} differs from the schema's {self.shape}"
        return None

    def decoded(self, value: Any) -> Any:
        """Indexes; a value already an array (Datum stores label maps as indexes) is returned as is."""
        return mask_indexes(value) if self.is_encoded and not isinstance(value, np.ndarray) else value

    def stored(self, options: ConvertOptions) -> Feature:
        """Resize changes the shape; ``raw`` decodes; any other image encoding keeps the PNG (never JPEG)."""
        shape = tuple(options.resize) if options.resize is not None else None if options.resizes else self.shape
        encoding = "raw" if options.image_encoding == "raw" else self.encoding
        return replace(self, shape=shape, encoding=encoding)

    def convert(self, value: Any, record: dict, after: Feature, options: ConvertOptions) -> Any:
        from PIL import Image as PILImage

        if self.is_encoded:
            img = PILImage.open(io.BytesIO(value))
            img.load()
        else:
            img = PILImage.fromarray(np.asarray(value, np.uint8), mode="L")
        if options.resizes:
            img = resized(img, options.size_for(img.height, img.width), "nearest")  # keeps mode P and its palette
        if after.is_encoded:
            buffer = io.BytesIO()
            img.save(buffer, format="PNG", compress_level=6)
            return buffer.getvalue()
        return mask_indexes_of(img)

    def to_tensor(self, value: Any, channel_order: str) -> TensorData:
        """Raw: BYTE [H, W]; PNG: STRING [1]."""
        if self.is_encoded:
            return self.string_tensor(self.check_value(value))
        array = np.ascontiguousarray(self.check_value(value))
        return TensorData(BYTE, tuple(array.shape), array.tobytes())

    def from_tensor(self, tensor: TensorData, channel_order: str) -> Any:
        if self.is_encoded:
            return self.one_string(tensor)
        self.expect(tensor, BYTE)
        if len(tensor.dims) != 2 or len(tensor.data) != tensor.dims[0] * tensor.dims[1]:
            raise CorruptShardError(f"field {self.name!r}: mask dims {list(tensor.dims)} with "
                                    f"{len(tensor.data)} bytes are not an H×W map")
        return np.frombuffer(tensor.data, np.uint8).reshape(tensor.dims).copy()

    def check_hdf5(self) -> None:
        if not self.is_encoded and self.shape is None:
            raise UnsupportedCodecError(
                f"hdf5 stores raw masks as one N×H×W array; field {self.name!r} varies in size. "
                f"Use --resize HxW, or keep the PNGs.")

    def h5_layout(self) -> tuple[Any, tuple[int, ...]]:
        return (vlen_bytes(), ()) if self.is_encoded else (np.uint8, tuple(self.shape))  # type: ignore[arg-type]

    @property
    def h5_fixed(self) -> bool:
        return not self.is_encoded

    def h5_row(self, value: Any, channel_order: str) -> Any:
        return np.frombuffer(value, np.uint8) if self.is_encoded else np.asarray(value, np.uint8)

    def h5_value(self, row: Any, channel_order: str) -> Any:
        return np.asarray(row, np.uint8).tobytes() if self.is_encoded else np.asarray(row, np.uint8).copy()

    def h5_column(self, data: Any, channel_order: str) -> Any:
        return super().h5_column(data, channel_order) if self.is_encoded else np.asarray(data, np.uint8)

    def describe_bits(self) -> list[str]:
        bits = super().describe_bits()
        if self.shape:
            bits.append("x".join(str(d) for d in self.shape))
        if self.names:
            bits.append(f"{len(self.names)} classes")
        return bits

    def draw(self, picture: Any, value: Any) -> Any:
        return overlay(picture, self.decoded(value) if isinstance(value, bytes) else np.asarray(value, np.uint8))

    def summary(self, value: Any) -> str:
        array = self.decoded(value) if isinstance(value, bytes) else np.asarray(value)
        return f"{array.dtype}{list(array.shape)} classes {np.unique(array).tolist()[:10]}"


def overlay(picture: Any, indexes: np.ndarray) -> Any:
    """Classes other than 0 (background) blended half over ``picture``; the boundary index in white."""
    from PIL import Image as PILImage

    base = np.asarray(picture.convert("RGB").resize(indexes.shape[::-1], PILImage.Resampling.NEAREST), np.float32)
    colours = np.array([class_colour(i) for i in range(256)], np.float32)[indexes]
    marked = (indexes != 0)[..., None]
    mixed = np.where(marked, (base + colours) / 2, base)
    return PILImage.fromarray(mixed.round().astype(np.uint8))


def mask_indexes_of(img: Any) -> np.ndarray:
    if img.mode not in INDEX_MODES:
        raise ValueError(f"a mask must hold indexes (palette or grey), this one is {img.mode}")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
