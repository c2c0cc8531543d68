"""``Bytes``: opaque bytes per record (a packet, a clip), kept exactly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from thresher.errors import CorruptShardError
from thresher.features.base import STRING, Feature, TensorData
from thresher.features.image import vlen_bytes
from thresher.lazy import np


@dataclass(frozen=True)
class Bytes(Feature):
    """Python ``bytes``: STRING [1] in TensorProtos, a variable-length uint8 row in HDF5."""

    kind: ClassVar[str] = "bytes"
    listed: ClassVar[bool] = True

    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, bytes | bytearray) else f"expected bytes, got {type(value).__name__}"

    def to_tensor(self, value: Any, channel_order: str) -> TensorData:
        return TensorData(STRING, (1,), [bytes(self.check_value(value))])

    def from_tensor(self, tensor: TensorData, channel_order: str) -> Any:
        self.expect(tensor, STRING)
        if len(tensor.data) != 1:
            raise CorruptShardError(f"field {self.name!r}: expected 1 string, tensor holds {len(tensor.data)}")
        return bytes(tensor.data[0])

    def h5_layout(self) -> tuple[Any, tuple[int, ...]]:
        return vlen_bytes(), ()

    def h5_row(self, value: Any, channel_order: str) -> Any:
        return np.frombuffer(bytes(value), np.uint8)

    def h5_value(self, row: Any, channel_order: str) -> Any:
        return np.asarray(row, np.uint8).tobytes()
