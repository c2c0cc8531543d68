"""``Image``: a photo, as uint8 (H, W, C) pixels or the published file's bytes."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from thresher.errors import CorruptShardError, UnsupportedCodecError
from thresher.features.base import BYTE, STRING, Feature, TensorData
from thresher.features.channels import from_stored, interleave, needs_swap, swap_rb
from thresher.features.opencv import convert_photo
from thresher.features.pictures import (
    decode_image,
    encoded_bytes,
    from_array,
    open_image,
    resized,
    save_image,
    to_array,
)
from thresher.lazy import np

if TYPE_CHECKING:
    from thresher.transforms import ConvertOptions

CHECK_BYTES = 256 << 10  # HDF5 pixels checked, then converted, per step

def vlen_bytes() -> Any:
    import h5py

    return h5py.vlen_dtype(np.uint8)


@dataclass(frozen=True)
class Encodable(Feature):
    """A field stored raw or as encoded file bytes (``encoding`` names the file format)."""

    encoding: str = "raw"  # type: ignore[assignment]

    def encoded_problem(self, value: Any) -> str | None:
        if not isinstance(value, bytes | bytearray) or not value:
            return "expected non-empty encoded bytes"
        return None

    @property
    def needs_decoding(self) -> bool:
        return self.is_encoded

    def string_tensor(self, value: Any) -> TensorData:
        return TensorData(STRING, (1,), [encoded_bytes(value, self.name, self.encoding)])

    def one_string(self, tensor: TensorData) -> bytes:
        self.expect(tensor, STRING)
        if len(tensor.data) != 1:
            raise CorruptShardError(f"field {self.name!r}: expected 1 string, tensor holds {len(tensor.data)}")
        return tensor.data[0]

    def describe_bits(self) -> list[str]:
        return [f"encoded {self.encoding}"] if self.is_encoded else []


@dataclass(frozen=True)
class Image(Encodable):
    """A photo. Raw: uint8 (H, W, C) in RGB (or one grey channel); ``shape`` when every record shares it.

    Stored pixels follow the dataset's channel order (BGR for Caffe tools); ``--resize`` is bilinear.
    """

    shape: tuple[int, ...] | None = None

    kind: ClassVar[str] = "image"
    resample: ClassVar[str | None] = "bilinear"

    @property
    def channels(self) -> int:
        return self.shape[2] if self.shape else 3

    def pixels(self, value: Any) -> np.ndarray:
        """A raw value as a checked array, else ValueError naming the field."""
        if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 3:
            got = f"{value.dtype} array of shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
            raise ValueError(f"field {self.name!r}: raw image must be a uint8 (H, W, C) array, got {got}")
        shape = self.shape
        if shape is not None and value.shape != shape and value.shape != tuple(shape):
            raise ValueError(f"field {self.name!r}: image shape {value.shape} differs from the schema's {self.shape}")
        if value.size == 0:
            raise ValueError(f"field {self.name!r}: image of shape {value.shape} has no pixels")
        return value

    def problem(self, value: Any) -> str | None:
        if self.is_encoded:
            return self.encoded_problem(value)
        if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 3:
            return "expected a uint8 H×W×C array"
        if self.shape is not None and tuple(value.shape) != self.shape:
            return f"image shape {tuple(value.shape)} differs from the schema's {self.shape}"
        return None

    def column_ok(self, column: Any, n: int) -> bool:
        if self.is_encoded or not (isinstance(column, np.ndarray) and column.dtype == np.uint8 and column.ndim == 4):
            return False
        return self.shape is None or tuple(column.shape[1:]) == self.shape

    def decoded(self, value: Any) -> Any:
        return decode_image(value, self.channels) if self.is_encoded else value

    # ------------------------------------------------------------------ options

    def stored(self, options: ConvertOptions) -> Feature:
        """``asis`` keeps the published form unless a resize forces a decode, which gives raw pixels
        (like ``convert_imageset --resize_*`` without ``--encoded``)."""
        shape = self.shape
        if options.resize is not None:
            shape = (*options.resize, self.shape[2] if self.shape else 3)
        elif options.resize_short is not None:  # each image keeps its aspect: sizes vary
            shape = None
        if options.image_encoding == "asis":
            encoding = "raw" if options.resizes else self.encoding
        else:
            encoding = options.image_encoding
        return replace(self, encoding=encoding, shape=shape)

    def convert(self, value: Any, record: dict, after: Feature, options: ConvertOptions) -> Any:
        """Decode, resize, re-encode, staying in PIL images: every trip through numpy copies the
        whole picture, and with several workers that memory traffic, not the codec, sets the pace."""
        assert isinstance(after, Image)
        if options.resampler == "opencv" and self.resample == "bilinear":
            return convert_photo(value, self.channels, options.size_for, after.encoding, options.jpeg_quality)
        img = open_image(value, self.channels) if self.is_encoded else from_array(np.asarray(value, dtype=np.uint8))
        if options.resizes:
            img = resized(img, options.size_for(img.height, img.width), self.resample or "bilinear")
        if after.is_encoded:
            return save_image(img, after.encoding, options.jpeg_quality)
        return np.ascontiguousarray(to_array(img))

    # ------------------------------------------------------------------ TensorProtos

    def to_tensor(self, value: Any, channel_order: str) -> TensorData:
        """Raw: BYTE [H, W, C] interleaved in the stored order; encoded: STRING [1] (``make_image_db``)."""
        if self.is_encoded:
            return self.string_tensor(value)
        img = self.pixels(value)
        if needs_swap(channel_order, img.shape[2]):
            img = swap_rb(img)
        return TensorData(BYTE, img.shape, img.tobytes())  # tobytes() is C order whatever the strides

    def from_tensor(self, tensor: TensorData, channel_order: str) -> Any:
        if self.is_encoded:
            return self.one_string(tensor)
        self.expect(tensor, BYTE)
        dims = list(tensor.dims)
        if len(dims) not in (2, 3):
            raise CorruptShardError(f"field {self.name!r}: image dims {dims} are not [H, W] or [H, W, C]")
        shape = (dims[0], dims[1], dims[2] if len(dims) == 3 else 1)
        if min(shape) <= 0:
            raise CorruptShardError(f"field {self.name!r}: image dims {dims} must be positive")
        if len(tensor.data) != math.prod(shape):
            raise CorruptShardError(f"field {self.name!r}: byte_data holds {len(tensor.data)} bytes "
                                    f"but dims {dims} need {math.prod(shape)}")
        if self.shape is not None and shape != tuple(self.shape):
            raise CorruptShardError(f"field {self.name!r}: image is {shape} but the schema says {self.shape}")
        return from_stored(np.frombuffer(tensor.data, np.uint8).reshape(shape), channel_order)

    # ------------------------------------------------------------------ HDF5

    def check_hdf5(self) -> None:
        if not self.is_encoded and self.shape is None:
            raise UnsupportedCodecError(
                f"hdf5 stores raw images as one N×C×H×W array, so every image needs the same size; "
                f"field {self.name!r} varies. Use --resize HxW, or keep the images encoded."
            )

    def h5_layout(self) -> tuple[Any, tuple[int, ...]]:
        """Raw: float32 C×H×W as Caffe's HDF5Data reads it (values unscaled); encoded: the file bytes."""
        if self.is_encoded:
            return vlen_bytes(), ()
        h, w, c = self.shape  # type: ignore[misc]
        return np.float32, (c, h, w)

    @property
    def h5_fixed(self) -> bool:
        return not self.is_encoded

    def h5_row(self, value: Any, channel_order: str) -> Any:
        if self.is_encoded:
            return np.frombuffer(value, dtype=np.uint8)
        pixels = np.asarray(value)
        if channel_order == "BGR":
            pixels = pixels[..., ::-1]
        return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)

    def h5_rows(self, column: Any, channel_order: str) -> np.ndarray:
        column = np.asarray(column)
        if channel_order == "BGR":
            column = column[..., ::-1]
        return column.transpose(0, 3, 1, 2).astype(np.float32)

    def h5_value(self, row: Any, channel_order: str) -> Any:
        if self.is_encoded:
            return np.asarray(row, dtype=np.uint8).tobytes()
        pixels = np.asarray(row).transpose(1, 2, 0)
        if np.any((pixels < 0) | (pixels > 255) | (pixels != np.round(pixels))):
            raise ValueError(f"field {self.name!r}: pixel values are not whole numbers in 0..255")
        pixels = pixels.astype(np.uint8)
        if channel_order == "BGR":
            pixels = pixels[..., ::-1]
        return np.ascontiguousarray(pixels)

    def h5_column(self, data: Any, channel_order: str) -> Any:
        if self.is_encoded:
            return super().h5_column(data, channel_order)
        n, channels, h, w = data.shape
        order = range(channels - 1, -1, -1) if channel_order == "BGR" else range(channels)
        out = np.empty((n, h, w, channels), np.uint8)
        # A few rows at a time, so the conversion reads what the check just brought into the CPU's cache.
        step = max(1, CHECK_BYTES // max(1, data.itemsize * channels * h * w))
        for start in range(0, n, step):
            rows = data[start:start + step]
            if _outside_bytes(rows):
                raise ValueError("pixel values outside 0..255")
            interleave(rows, order, out[start:start + step])
        return out

    def h5_stored_fraction(self) -> int:
        return 1 if self.is_encoded else 4

    def describe_bits(self) -> list[str]:
        bits = super().describe_bits()
        if self.shape:
            bits.append("x".join(str(d) for d in self.shape))
        return bits


def _outside_bytes(data: Any) -> bool:
    """Whether any stored pixel lies outside 0..255 (a NaN too), in one pass over float32 rows.

    The bits of a float32 from +0.0 to 255.0, read as an unsigned int, are exactly the ints up
    to 255.0's; a negative value (sign bit set), a larger one, an infinity or a NaN reads above.
    """
    if data.dtype == np.float32 and data.flags.c_contiguous:
        return bool(data.view(np.uint32).max() > np.float32(255).view(np.uint32))
    return bool(data.min() < 0 or data.max() > 255)
