"""``ClassLabel``: a class index with its names, or a multi-label vector of 0/1 per name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from thresher.errors import CorruptShardError
from thresher.features.base import INT32, Feature, TensorData
from thresher.features.integer import Integer
from thresher.lazy import np


@dataclass(frozen=True)
class ClassLabel(Integer):
    """One of ``names`` (a Python ``int`` index), or with ``multi`` a uint8 vector, 1 where a name applies.

    The scalar form is a label Caffe's Datum and HDF5 ``label`` hold; the vector is INT32 [K] in
    TensorProtos and an int32 (N, K) HDF5 dataset.
    """

    names: tuple[str, ...] = ()
    multi: bool = False

    kind: ClassVar[str] = "class_label"

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError(f"field {self.name!r}: a class label needs its class names")
        object.__setattr__(self, "minimum", 0)
        object.__setattr__(self, "maximum", len(self.names) - 1)

    @property
    def scalar(self) -> bool:
        return not self.multi

    @property
    def cacheable(self) -> bool:  # type: ignore[override]
        return not self.multi

    def vector(self, value: Any) -> np.ndarray | None:
        array = np.asarray(value) if isinstance(value, np.ndarray | list | tuple) else None
        if array is None or array.shape != (len(self.names),) or array.dtype.kind not in "biu":
            return None
        if array.size and (array.min() < 0 or array.max() > 1):
            return None
        return array.astype(np.uint8)

    def problem(self, value: Any) -> str | None:
        if not self.multi:
            return super().problem(value)
        if self.vector(value) is None:
            got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
            return f"expected {len(self.names)} values of 0 or 1 (one per class name), got {got}"
        return None

    def column_ok(self, column: Any, n: int) -> bool:
        return not self.multi and super().column_ok(column, n)

    def check_tensorprotos(self) -> None:
        if not self.multi:
            super().check_tensorprotos()

    def to_tensor(self, value: Any, channel_order: str) -> TensorData:
        if not self.multi:
            return super().to_tensor(value, channel_order)
        vector = self.vector(self.check_value(value))
        return TensorData(INT32, (len(self.names),), np.asarray(vector, np.int64))

    def from_tensor(self, tensor: TensorData, channel_order: str) -> Any:
        if not self.multi:
            return super().from_tensor(tensor, channel_order)
        self.expect(tensor, INT32, (len(self.names),))
        self.expect_count(tensor)
        if len(tensor.data) and (tensor.data.min() < 0 or tensor.data.max() > 1):
            raise CorruptShardError(f"field {self.name!r}: multi-label values other than 0 and 1")
        return tensor.data.astype(np.uint8)

    def h5_layout(self) -> tuple[Any, tuple[int, ...]]:
        return np.int32, (() if not self.multi else (len(self.names),))

    def h5_row(self, value: Any, channel_order: str) -> Any:
        return value if not self.multi else self.vector(value)

    def h5_value(self, row: Any, channel_order: str) -> Any:
        return int(row) if not self.multi else np.asarray(row, np.uint8)

    def h5_column(self, data: Any, channel_order: str) -> Any:
        return data.astype(np.uint8 if self.multi else np.int64)

    def batch_column(self, items: list[Any]) -> Any:
        return Feature.batch_column(self, items) if self.multi else super().batch_column(items)

    def describe_bits(self) -> list[str]:
        shown = ", ".join(self.names[:5]) + (", ..." if len(self.names) > 5 else "")
        return [f"{'multi-label of ' if self.multi else ''}{len(self.names)} classes: {shown}"]

    def caption(self, value: Any) -> str | None:
        if self.multi:
            return ",".join(n for n, on in zip(self.names, np.asarray(value).tolist(), strict=False) if on)
        index = int(value)
        return self.names[index] if 0 <= index < len(self.names) else str(index)

    def summary(self, value: Any) -> str:
        caption = self.caption(value)
        return f"{caption!r}" if self.multi else f"{int(value)} ({caption})"
