"""The ``Feature`` base class: what every kind of field answers, so no module switches on kinds.

A record is a plain ``dict`` of field name to value. Each field of a schema is an instance of
one ``Feature`` subclass, which owns everything that depends on its kind: checking a value,
how ``--resize`` treats it, its Caffe2 tensor, its HDF5 dataset, its decoding on read, its
manifest JSON and how ``show``/``inspect`` describe it. Adding a kind is adding a subclass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from thresher.errors import CorruptShardError, UnsupportedCodecError
from thresher.lazy import np

if TYPE_CHECKING:
    from thresher.transforms import ConvertOptions

KINDS: dict[str, type[Feature]] = {}  # kind name in the manifest -> class

# caffe2.TensorProto.DataType values (kept here so features need no protobuf import).
FLOAT, INT32, BYTE, STRING, BOOL, UINT8, INT8, UINT16, INT16, INT64, DOUBLE = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13
TYPE_NAMES = {FLOAT: "FLOAT", INT32: "INT32", BYTE: "BYTE", STRING: "STRING", BOOL: "BOOL", UINT8: "UINT8",
              INT8: "INT8", UINT16: "UINT16", INT16: "INT16", INT64: "INT64", 12: "FLOAT16", DOUBLE: "DOUBLE"}


class TensorData(NamedTuple):
    """One Caffe2 ``TensorProto`` as plain values, between a feature and the codec.

    ``data`` is ``bytes`` for BYTE, a list of ``bytes`` for STRING and a numpy array otherwise
    (float32 for FLOAT, float64 for DOUBLE, int64 for INT64 and for the types Caffe2 keeps in
    ``int32_data``). A named tuple: one is built per field per record.
    """

    data_type: int
    dims: tuple[int, ...]
    data: Any


def type_name(data_type: int) -> str:
    return TYPE_NAMES.get(data_type, f"data_type {data_type}")


@dataclass(frozen=True)
class Feature:
    """One field of a record. Subclasses set ``kind`` and override what differs for them."""

    name: str
    description: str = ""

    kind: ClassVar[str] = ""
    resample: ClassVar[str | None] = None  # how --resize treats it: "bilinear", "nearest" or None (untouched)
    listed: ClassVar[bool] = False  # batches hold it as a list (text, bytes) rather than an array

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            KINDS[cls.kind] = cls

    # ------------------------------------------------------------------ form

    @property
    def encoding(self) -> str:
        return "raw"

    @property
    def is_encoded(self) -> bool:
        return self.encoding != "raw"

    @property
    def needs_decoding(self) -> bool:
        """Whether the reader turns the stored value into an array (encoded images, FLAC)."""
        return False

    def decoded(self, value: Any) -> Any:
        """The stored value as the reader hands it out."""
        return value

    # ------------------------------------------------------------------ checking

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this field, or None; the caller names record and field."""
        return None

    def column_ok(self, column: Any, n: int) -> bool:
        """Whether a whole batch column is valid without looking at rows (False: check row by row)."""
        return False

    def check_value(self, value: Any) -> Any:
        """``value`` if valid, else ValueError naming the field and the problem."""
        problem = self.problem(value)
        if problem:
            raise ValueError(f"field {self.name!r}: {problem}")
        return value

    # ------------------------------------------------------------------ conversion options

    def stored(self, options: ConvertOptions) -> Feature:
        """The field as stored once the user's options are applied (itself when they do not touch it)."""
        return self

    def convert(self, value: Any, record: dict, after: Feature, options: ConvertOptions) -> Any:
        """The value in the stored form ``after`` (only called when :meth:`stored` changed the field)."""
        return value

    # ------------------------------------------------------------------ Caffe2 TensorProtos

    def check_tensorprotos(self) -> None:
        """UnsupportedCodecError if a TensorProto cannot hold every value of this field."""

    def to_tensor(self, value: Any, channel_order: str) -> TensorData:
        raise UnsupportedCodecError(f"field {self.name!r}: {self.kind} has no TensorProto form")

    def from_tensor(self, tensor: TensorData, channel_order: str) -> Any:
        raise UnsupportedCodecError(f"field {self.name!r}: {self.kind} has no TensorProto form")

    def expect(self, tensor: TensorData, data_type: int, dims: tuple[int, ...] | None = None) -> None:
        """CorruptShardError unless the tensor has this type (and these dims)."""
        if tensor.data_type != data_type:
            raise CorruptShardError(
                f"field {self.name!r}: tensor is {type_name(tensor.data_type)}, expected {type_name(data_type)}")
        if dims is not None and tensor.dims != dims:
            raise CorruptShardError(f"field {self.name!r}: tensor dims {list(tensor.dims)}, expected {list(dims)}")

    def expect_count(self, tensor: TensorData) -> None:
        """CorruptShardError unless the tensor holds as many values as its dims say (empty dims: one)."""
        if len(tensor.data) != math.prod(tensor.dims):
            raise CorruptShardError(
                f"field {self.name!r}: dims {list(tensor.dims)} need {math.prod(tensor.dims)} values, "
                f"the tensor holds {len(tensor.data)}")

    # ------------------------------------------------------------------ HDF5

    def check_hdf5(self) -> None:
        """UnsupportedCodecError if this field's values cannot share one HDF5 dataset."""

    def h5_layout(self) -> tuple[Any, tuple[int, ...]]:
        """(dtype, shape of one row) of this field's HDF5 dataset."""
        raise UnsupportedCodecError(f"field {self.name!r}: {self.kind} has no HDF5 form")

    @property
    def h5_fixed(self) -> bool:
        """Rows are fixed-shape numbers, so a batch is converted as one array."""
        return False

    def h5_row(self, value: Any, channel_order: str) -> Any:
        return value

    def h5_rows(self, column: Any, channel_order: str) -> np.ndarray:
        """A whole batch column as rows of :meth:`h5_layout` (fixed fields only)."""
        return np.asarray(column, dtype=self.h5_layout()[0])

    def h5_value(self, row: Any, channel_order: str) -> Any:
        return row

    def h5_column(self, data: Any, channel_order: str) -> Any:
        """Rows read from the dataset as the reader's column."""
        return [self.h5_value(v, channel_order) for v in data]

    def h5_stored_fraction(self) -> int:
        """How many times larger the dataset is than the values it gives back (float32 pixels: 4)."""
        return 1

    # ------------------------------------------------------------------ batches

    def batch_column(self, items: list[Any]) -> Any:
        """Values of several records as one batch column: equal arrays stacked, else an object array."""
        if items and all(isinstance(x, np.ndarray) for x in items):
            first = items[0]
            if all(x.shape == first.shape and x.dtype == first.dtype for x in items):
                return np.stack(items)
        column = np.empty(len(items), dtype=object)
        for i, x in enumerate(items):
            column[i] = x
        return column

    # ------------------------------------------------------------------ describing

    def describe_bits(self) -> list[str]:
        """Words after the kind in ``thresher info`` (encoding, shape, range, names)."""
        return []

    def describe(self) -> str:
        text = f"{self.name}: {', '.join([self.kind, *self.describe_bits()])}"
        return f"{text}  ({self.description})" if self.description else text

    def summary(self, value: Any) -> str:
        """One record's value in a line of ``inspect``."""
        if isinstance(value, np.ndarray):
            return f"{value.dtype}{list(value.shape)}"
        if isinstance(value, bytes):
            return f"<{len(value)} bytes>"
        return repr(value)

    def caption(self, value: Any) -> str | None:
        """Text under a contact-sheet cell, or None when this field is not captioned."""
        return None

    def draw(self, picture: Any, value: Any) -> Any:
        """``picture`` (a PIL RGB image of the record's photo) with this field drawn on it."""
        return picture

    # ------------------------------------------------------------------ manifest JSON

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            data[f.name] = _plain(value)
        return data

    def with_changes(self, **changes: Any) -> Feature:
        return replace(self, **changes)


def _plain(value: Any) -> Any:
    if isinstance(value, Feature):
        return value.to_json()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _tupled(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


def feature_from_json(data: Any) -> Feature:
    """The feature a manifest's JSON describes; ValueError naming an unknown kind."""
    kind = data.get("kind")
    cls = KINDS.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"field {data.get('name')!r}: unknown kind {kind!r}; known: {', '.join(sorted(KINDS))}")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            continue  # written by another version for another kind (e.g. dims of an image)
        if isinstance(value, dict) and "kind" in value:
            value = feature_from_json(value)
        values[key] = _tupled(value)
    return cls(**values)
