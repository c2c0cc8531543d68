"""``Text``: a Python ``str`` per record, stored as UTF-8."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from thresher.errors import CorruptShardError
from thresher.features.base import STRING, Feature, TensorData


@dataclass(frozen=True)
class Text(Feature):
    """A transcript, a sentence, a speaker id: STRING [1] in TensorProtos, a UTF-8 string in HDF5."""

    kind: ClassVar[str] = "str"
    listed: ClassVar[bool] = True

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, str) else f"expected text, got {type(value).__name__}"

    def to_tensor(self, value: Any, channel_order: str) -> TensorData:
        if not isinstance(value, str):
            raise ValueError(f"field {self.name!r}: expected str, got {type(value).__name__}")
        return TensorData(STRING, (1,), [value.encode("utf-8")])

    def from_tensor(self, tensor: TensorData, channel_order: str) -> Any:
        self.expect(tensor, STRING)
        if len(tensor.data) != 1:
            raise CorruptShardError(f"field {self.name!r}: expected 1 string, tensor holds {len(tensor.data)}")
        try:
            return tensor.data[0].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptShardError(f"field {self.name!r}: string is not UTF-8 ({exc})") from None

    def h5_layout(self) -> tuple[Any, tuple[int, ...]]:
        import h5py

        return h5py.string_dtype("utf-8"), ()

    def h5_value(self, row: Any, channel_order: str) -> Any:
        return row.decode("utf-8") if isinstance(row, bytes) else str(row)

    def caption(self, value: Any) -> str | None:
        return str(value)
