"""``Integer``: one whole number per record (a label, a count, a sample rate)."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, ClassVar

from thresher.errors import CorruptShardError, UnsupportedCodecError
from thresher.features.base import INT32, Feature, TensorData
from thresher.lazy import np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class Integer(Feature):
    """A Python ``int``, stored as int32 (what Caffe's labels and Caffe2's INT32 hold).

    ``dims`` is the Caffe2 tensor shape: ``(1,)`` like ``make_cifar_db``/``make_image_db`` or
    ``()`` like ``make_mnist_db``. ``minimum``/``maximum`` bound it: values outside are malformed input.
    """

    dims: tuple[int, ...] = (1,)
    minimum: int | None = None
    maximum: int | None = None

    kind: ClassVar[str] = "int"
    cacheable: ClassVar[bool] = True  # its tensor depends on the value alone

    @property
    def scalar(self) -> bool:
        return True

    @property
    def low(self) -> int | None:
        return self.minimum

    @property
    def high(self) -> int | None:
        return self.maximum

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, int | np.integer):
            return f"expected an integer, got {type(value).__name__}"
        low, high = self.low, self.high
        if (low is not None and value < low) or (high is not None and value > high):
            return f"value {int(value)} is out of range {low}..{high}"
        if not INT32_MIN <= int(value) <= INT32_MAX:
            return f"value {int(value)} does not fit int32"
        return None

    def column_ok(self, column: Any, n: int) -> bool:
        values = np.asarray(column)
        if values.dtype.kind not in "iu" or values.shape != (n,):
            return False
        low = INT32_MIN if self.low is None else max(self.low, INT32_MIN)
        high = INT32_MAX if self.high is None else min(self.high, INT32_MAX)
        return not (n and (values.min() < low or values.max() > high))

    def int32(self, value: Any) -> int:
        """``value`` as a Python int that fits int32, else UnsupportedCodecError (it would be truncated)."""
        try:
            v = operator.index(value)
        except TypeError:
            raise ValueError(f"field {self.name!r}: expected an int, got {type(value).__name__}") from None
        if not INT32_MIN <= v <= INT32_MAX:
            raise UnsupportedCodecError(f"field {self.name!r}: value {v} does not fit the int32 the format stores")
        return v

    def check_int32_bounds(self, codec: str) -> None:
        """Refuse a field whose declared range cannot be stored as int32."""
        for bound in (self.low, self.high):
            if bound is not None and not INT32_MIN <= bound <= INT32_MAX:
                raise UnsupportedCodecError(
                    f"{codec} stores integers as int32; field {self.name!r} may hold {bound}, which does not fit"
                )

    def check_tensorprotos(self) -> None:
        if math.prod(self.dims) != 1:
            raise UnsupportedCodecError(
                f"field {self.name!r} holds one int but its dims {self.dims} describe {math.prod(self.dims)} values"
            )
        self.check_int32_bounds("tensorprotos")

    def to_tensor(self, value: Any, channel_order: str) -> TensorData:
        """INT32 with ``dims``, one value in ``int32_data``."""
        return TensorData(INT32, tuple(self.dims), np.array([self.int32(value)], np.int64))

    def from_tensor(self, tensor: TensorData, channel_order: str) -> Any:
        self.expect(tensor, INT32)
        if math.prod(tensor.dims) != 1 or len(tensor.data) != 1:
            raise CorruptShardError(
                f"field {self.name!r}: expected one int, tensor has dims {list(tensor.dims)} "
                f"and {len(tensor.data)} values"
            )
        return int(tensor.data[0])

    def h5_layout(self) -> tuple[Any, tuple[int, ...]]:
        return np.int32, ()

    @property
    def h5_fixed(self) -> bool:
        return True

    def h5_value(self, row: Any, channel_order: str) -> Any:
        return int(row)

    def h5_column(self, data: Any, channel_order: str) -> Any:
        return data.astype(np.int64)

    def batch_column(self, items: list[Any]) -> Any:
        return np.array(items, dtype=np.int64)

    def describe_bits(self) -> list[str]:
        return [f"{self.low}..{self.high}"] if self.low is not None and self.high is not None else []

    def caption(self, value: Any) -> str | None:
        return str(value)
