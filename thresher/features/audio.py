"""``Audio``: mono int16 PCM samples, or FLAC bytes."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from thresher.errors import CorruptShardError
from thresher.features.base import INT16, Feature, TensorData
from thresher.features.image import Encodable, vlen_bytes
from thresher.lazy import np

if TYPE_CHECKING:
    from thresher.transforms import ConvertOptions


def decode_audio(data: bytes) -> np.ndarray:
    import soundfile

    samples, _ = soundfile.read(io.BytesIO(data), dtype="int16")
    return samples


@dataclass(frozen=True)
class Audio(Encodable):
    """Raw: ``numpy.int16`` (N,). Encoded ``flac``: the file bytes, decoded on read.

    Raw samples follow Caffe2 exactly: ``TensorDeserializer`` reads INT16 only from ``int32_data``,
    so that is where they go, which keeps the value readable by ``TensorProtosDBInput``. The price
    is size (a negative sample takes a 10-byte varint); use ``flac`` when size matters.
    """

    kind: ClassVar[str] = "audio"

    def problem(self, value: Any) -> str | None:
        if self.is_encoded:
            return self.encoded_problem(value)
        if not isinstance(value, np.ndarray) or value.dtype != np.int16 or value.ndim != 1:
            return "expected a 1-D int16 array"
        return None

    def samples(self, value: Any) -> np.ndarray:
        if not isinstance(value, np.ndarray) or value.dtype != np.int16 or value.ndim != 1:
            got = f"{value.dtype} array of shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
            raise ValueError(f"field {self.name!r}: raw audio must be an int16 (N,) array, got {got}")
        return value

    def decoded(self, value: Any) -> Any:
        return decode_audio(value) if self.is_encoded else value

    def stored(self, options: ConvertOptions) -> Feature:
        return replace(self, encoding=options.audio_encoding)

    def convert(self, value: Any, record: dict, after: Feature, options: ConvertOptions) -> Any:
        import soundfile

        samples = np.asarray(value, dtype=np.int16)
        rate = int(record.get("sample_rate", 16000))
        buffer = io.BytesIO()
        soundfile.write(buffer, samples, rate, format="FLAC", subtype="PCM_16")
        return buffer.getvalue()

    def to_tensor(self, value: Any, channel_order: str) -> TensorData:
        """Raw: INT16 [N], samples in ``int32_data``; FLAC: STRING [1]."""
        if self.is_encoded:
            return self.string_tensor(value)
        samples = self.samples(value)
        return TensorData(INT16, (len(samples),), samples.astype(np.int64))

    def from_tensor(self, tensor: TensorData, channel_order: str) -> Any:
        if self.is_encoded:
            return self.one_string(tensor)
        self.expect(tensor, INT16)
        samples = tensor.data
        if len(tensor.dims) != 1 or tensor.dims[0] != len(samples):
            raise CorruptShardError(
                f"field {self.name!r}: dims {list(tensor.dims)} but int32_data holds {len(samples)} samples")
        if len(samples) and (samples.min() < -32768 or samples.max() > 32767):
            raise CorruptShardError(f"field {self.name!r}: INT16 tensor holds values outside int16")
        return samples.astype(np.int16)

    def h5_layout(self) -> tuple[Any, tuple[int, ...]]:
        if self.is_encoded:
            return vlen_bytes(), ()
        import h5py

        return h5py.vlen_dtype(np.int16), ()

    def h5_row(self, value: Any, channel_order: str) -> Any:
        return np.frombuffer(value, dtype=np.uint8) if self.is_encoded else np.asarray(value, dtype=np.int16)

    def h5_value(self, row: Any, channel_order: str) -> Any:
        return np.asarray(row, dtype=np.uint8).tobytes() if self.is_encoded else np.asarray(row, dtype=np.int16)
