"""``Sequence``: a list of values of one inner feature (tokens, frames, landmarks per face)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from thresher.errors import CorruptShardError, UnsupportedCodecError
from thresher.features.base import BYTE, INT32, STRING, Feature, TensorData
from thresher.lazy import np


@dataclass(frozen=True)
class Sequence(Feature):
    """A Python list whose items are values of ``feature``.

    TensorProtos: the items' tensors stacked into one, dims ``[N, *item dims]`` (items must agree
    in type and dims; an empty list is an INT32 ``[0]``). HDF5: items of a fixed-shape numeric
    feature, flattened into one variable-length row per record.
    """

    feature: Feature | None = None

    kind: ClassVar[str] = "sequence"
    listed: ClassVar[bool] = True

    @property
    def item(self) -> Feature:
        if self.feature is None:
            raise ValueError(f"field {self.name!r}: a sequence needs the feature of its items")
        return self.feature

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, list | tuple):
            return f"expected a list, got {type(value).__name__}"
        for i, item in enumerate(value):
            problem = self.item.problem(item)
            if problem:
                return f"item {i}: {problem}"
        return None

    def decoded(self, value: Any) -> Any:
        return [self.item.decoded(v) for v in value]

    @property
    def needs_decoding(self) -> bool:
        return self.item.needs_decoding

    def check_tensorprotos(self) -> None:
        self.item.check_tensorprotos()

    def to_tensor(self, value: Any, channel_order: str) -> TensorData:
        items = [self.item.to_tensor(v, channel_order) for v in self.check_value(value)]
        if not items:
            return TensorData(INT32, (0,), np.zeros(0, np.int64))
        first = items[0]
        if any(t.data_type != first.data_type or t.dims != first.dims for t in items):
            raise UnsupportedCodecError(f"field {self.name!r}: items differ in type or dims, so no one tensor holds them")
        if first.data_type == BYTE:
            data: Any = b"".join(t.data for t in items)
        elif first.data_type == STRING:
            data = [s for t in items for s in t.data]
        else:
            data = np.concatenate([np.asarray(t.data) for t in items])
        return TensorData(first.data_type, (len(items), *first.dims), data)

    def from_tensor(self, tensor: TensorData, channel_order: str) -> Any:
        if not tensor.dims:
            raise CorruptShardError(f"field {self.name!r}: a sequence tensor needs a leading dimension")
        n, dims = tensor.dims[0], tensor.dims[1:]
        if n == 0:
            return []
        size = len(tensor.data)
        if size % n:
            raise CorruptShardError(f"field {self.name!r}: {size} values do not split into {n} items")
        step = size // n
        if tensor.data_type not in (BYTE, STRING) and step != math.prod(dims):
            raise CorruptShardError(f"field {self.name!r}: dims {list(tensor.dims)} do not match {size} values")
        return [self.item.from_tensor(TensorData(tensor.data_type, dims, tensor.data[i * step:(i + 1) * step]),
                                      channel_order) for i in range(n)]

    def check_hdf5(self) -> None:
        if not self.item.h5_fixed:
            raise UnsupportedCodecError(
                f"hdf5 holds sequences of fixed-shape numbers only; field {self.name!r} holds {self.item.kind}: "
                f"use --codec tensorprotos with lmdb or minidb")

    def h5_layout(self) -> tuple[Any, tuple[int, ...]]:
        import h5py

        return h5py.vlen_dtype(np.dtype(self.item.h5_layout()[0])), ()

    def h5_row(self, value: Any, channel_order: str) -> Any:
        dtype, _ = self.item.h5_layout()
        rows = [np.asarray(self.item.h5_row(v, channel_order), dtype).reshape(-1) for v in value]
        return np.concatenate(rows) if rows else np.zeros(0, dtype)

    def h5_value(self, row: Any, channel_order: str) -> Any:
        _, shape = self.item.h5_layout()
        flat = np.asarray(row)
        return [self.item.h5_value(r, channel_order) for r in flat.reshape(-1, *shape)] if flat.size else []

    def describe_bits(self) -> list[str]:
        return [f"of {self.item.describe().split(': ', 1)[1]}"]

    def summary(self, value: Any) -> str:
        return f"{len(value)} x [{self.item.summary(value[0])}]" if len(value) else "[]"

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["feature"] = self.item.to_json()
        return data
