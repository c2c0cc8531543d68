"""``Tensor``: numbers of one dtype in a fixed shape, or with a variable leading dimension."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from thresher.errors import CorruptShardError, UnsupportedCodecError
from thresher.features.base import (
    BOOL,
    BYTE,
    DOUBLE,
    FLOAT,
    INT8,
    INT16,
    INT32,
    INT64,
    UINT16,
    Feature,
    TensorData,
)
from thresher.lazy import np

# numpy dtype -> the Caffe2 data type that holds it (uint8 as BYTE: one byte each, read back as uint8)
DATA_TYPES = {"float32": FLOAT, "float64": DOUBLE, "int64": INT64, "int32": INT32, "int16": INT16,
              "int8": INT8, "uint16": UINT16, "uint8": BYTE, "bool": BOOL}


@dataclass(frozen=True)
class Tensor(Feature):
    """A numpy array of ``dtype`` and ``shape``; ``None`` as the first dimension means it varies.

    TensorProtos: one tensor of the matching data type with the array's dims. HDF5: an (N, *shape)
    dataset when the shape is fixed, else one variable-length row per record, reshaped on read.
    """

    shape: tuple[int | None, ...] = ()
    dtype: str = "float32"

    kind: ClassVar[str] = "tensor"

    def __post_init__(self) -> None:
        if self.dtype not in DATA_TYPES:
            raise ValueError(f"field {self.name!r}: dtype {self.dtype!r} is not one of {', '.join(DATA_TYPES)}")
        if None in self.shape[1:]:
            raise ValueError(f"field {self.name!r}: only the first dimension may vary, shape is {self.shape}")

    @property
    def variable(self) -> bool:
        return bool(self.shape) and self.shape[0] is None

    @property
    def listed(self) -> bool:  # type: ignore[override]
        """Batches list variable-length tensors rather than pad them."""
        return self.variable

    def fits(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(w is None or w == g for w, g in zip(self.shape, shape, strict=True))

    def array(self, value: Any) -> np.ndarray | None:
        """The value as an array of the field's dtype, or None when it does not fit."""
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):
            return None
        if array.dtype == object or not np.can_cast(array.dtype, self.dtype, "same_kind") or not self.fits(array.shape):
            return None
        return array.astype(self.dtype, copy=False)

    def problem(self, value: Any) -> str | None:
        if self.array(value) is None:
            got = f"{np.asarray(value).dtype} {np.asarray(value).shape}" if isinstance(value, np.ndarray | list | tuple | float | int) else type(value).__name__
            want = "x".join("N" if d is None else str(d) for d in self.shape) or "scalar"
            return f"expected a {self.dtype} array of shape {want}, got {got}"
        return None

    def column_ok(self, column: Any, n: int) -> bool:
        return (not self.variable and isinstance(column, np.ndarray) and column.dtype == np.dtype(self.dtype)
                and column.shape == (n, *self.shape))

    def to_tensor(self, value: Any, channel_order: str) -> TensorData:
        array = self.array(self.check_value(value))
        assert array is not None
        flat = np.ascontiguousarray(array).reshape(-1)
        data = flat.tobytes() if self.dtype == "uint8" else flat
        return TensorData(DATA_TYPES[self.dtype], tuple(array.shape), data)

    def from_tensor(self, tensor: TensorData, channel_order: str) -> Any:
        self.expect(tensor, DATA_TYPES[self.dtype])
        if not self.fits(tensor.dims):
            raise CorruptShardError(f"field {self.name!r}: tensor dims {list(tensor.dims)} do not fit {self.shape}")
        data = np.frombuffer(tensor.data, np.uint8) if self.dtype == "uint8" else tensor.data
        self.expect_count(TensorData(tensor.data_type, tensor.dims, data))
        return np.asarray(data).astype(self.dtype).reshape(tensor.dims)

    def check_tensorprotos(self) -> None:
        if self.dtype not in DATA_TYPES:
            raise UnsupportedCodecError(f"field {self.name!r}: no Caffe2 data type holds {self.dtype}")

    def h5_layout(self) -> tuple[Any, tuple[int, ...]]:
        if self.variable:
            import h5py

            return h5py.vlen_dtype(np.dtype(self.dtype)), ()
        return np.dtype(self.dtype), tuple(self.shape)  # type: ignore[arg-type]

    @property
    def h5_fixed(self) -> bool:
        return not self.variable

    def h5_row(self, value: Any, channel_order: str) -> Any:
        array = self.array(value)
        return array.reshape(-1) if self.variable else array

    def h5_value(self, row: Any, channel_order: str) -> Any:
        array = np.asarray(row, dtype=self.dtype)
        return array.reshape(-1, *self.shape[1:]) if self.variable else array.copy()

    def h5_column(self, data: Any, channel_order: str) -> Any:
        return super().h5_column(data, channel_order) if self.variable else np.asarray(data, dtype=self.dtype)

    def describe_bits(self) -> list[str]:
        return [self.dtype, "x".join("N" if d is None else str(d) for d in self.shape) or "scalar"]

    def summary(self, value: Any) -> str:
        array = np.asarray(value)
        text = f"{array.dtype}{list(array.shape)}"
        if array.size and array.dtype.kind in "fiub":
            text += f" min {array.min():.4g} max {array.max():.4g} mean {array.mean():.4g}"
        return text

    def caption(self, value: Any) -> str | None:
        array = np.asarray(value)
        if array.size <= 4:
            return " ".join(f"{v:.3g}" for v in array.reshape(-1).tolist())
        return f"{array.dtype}{list(array.shape)}"
