"""``BoundingBoxes``: N boxes per record, each with a class and yes/no flags."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from thresher.errors import CorruptShardError
from thresher.features.base import FLOAT, Feature, TensorData
from thresher.features.colours import class_colour
from thresher.lazy import np

CONVENTIONS = {"xyxy": "x_min, y_min, x_max, y_max in pixels"}


@dataclass(frozen=True)
class BoundingBoxes(Feature):
    """A dict: ``boxes`` float32 (N, 4) in ``convention``, ``labels`` int64 (N,) indexing ``names``,
    and one bool (N,) array per name in ``flags`` (e.g. difficult, truncated).

    TensorProtos: one FLOAT [N, 5 + flags] tensor, a row per box: the four coordinates, the
    label, then each flag as 0 or 1 (floats hold labels exactly up to 2**24). HDF5: those rows
    flattened into one variable-length float32 row per record.
    """

    names: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    convention: str = "xyxy"

    kind: ClassVar[str] = "boxes"
    listed: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise ValueError(f"field {self.name!r}: box convention {self.convention!r} is not one of "
                             f"{', '.join(CONVENTIONS)}")

    @property
    def width(self) -> int:
        return 5 + len(self.flags)

    def problem(self, value: Any) -> str | None:
        keys = {"boxes", "labels", *self.flags}
        if not isinstance(value, dict) or set(value) != keys:
            got = sorted(value) if isinstance(value, dict) else type(value).__name__
            return f"expected a dict with keys {sorted(keys)}, got {got}"
        boxes = np.asarray(value["boxes"])
        if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.dtype.kind not in "fiu":
            return f"boxes must be an (N, 4) array of numbers, got {boxes.dtype} {boxes.shape}"
        n = len(boxes)
        if not np.isfinite(boxes).all() or (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
            return f"boxes must be finite {CONVENTIONS[self.convention]} with min <= max"
        labels = np.asarray(value["labels"])
        if labels.shape != (n,) or (n and labels.dtype.kind not in "iu"):
            return f"labels must be {n} integers, got {labels.dtype} {labels.shape}"
        if n and self.names and (labels.min() < 0 or labels.max() >= len(self.names)):
            return f"a label is outside 0..{len(self.names) - 1}"
        for flag in self.flags:
            if np.asarray(value[flag]).shape != (n,):
                return f"flag {flag!r} must have one value per box ({n})"
        return None

    def rows(self, value: Any) -> np.ndarray:
        """The (N, 5 + flags) float32 table the stored forms hold."""
        self.check_value(value)
        columns = [np.asarray(value["boxes"], np.float32).reshape(-1, 4),
                   np.asarray(value["labels"], np.float32)[:, None],
                   *(np.asarray(value[f], bool).astype(np.float32)[:, None] for f in self.flags)]
        return np.concatenate(columns, axis=1)

    def from_rows(self, table: np.ndarray) -> dict[str, np.ndarray]:
        out = {"boxes": np.ascontiguousarray(table[:, :4], dtype=np.float32),
               "labels": table[:, 4].astype(np.int64)}
        for i, flag in enumerate(self.flags):
            out[flag] = table[:, 5 + i] != 0
        return out

    def to_tensor(self, value: Any, channel_order: str) -> TensorData:
        table = self.rows(value)
        return TensorData(FLOAT, (len(table), self.width), table.reshape(-1))

    def from_tensor(self, tensor: TensorData, channel_order: str) -> Any:
        self.expect(tensor, FLOAT)
        if len(tensor.dims) != 2 or tensor.dims[1] != self.width:
            raise CorruptShardError(f"field {self.name!r}: box tensor dims {list(tensor.dims)}, "
                                    f"expected [N, {self.width}]")
        self.expect_count(tensor)
        return self.from_rows(np.asarray(tensor.data, np.float32).reshape(tensor.dims))

    def h5_layout(self) -> tuple[Any, tuple[int, ...]]:
        import h5py

        return h5py.vlen_dtype(np.float32), ()

    def h5_row(self, value: Any, channel_order: str) -> Any:
        return self.rows(value).reshape(-1)

    def h5_value(self, row: Any, channel_order: str) -> Any:
        flat = np.asarray(row, np.float32)
        if flat.size % self.width:
            raise ValueError(f"field {self.name!r}: {flat.size} numbers are not rows of {self.width}")
        return self.from_rows(flat.reshape(-1, self.width))

    def describe_bits(self) -> list[str]:
        bits = [f"N x 4 {self.convention} ({CONVENTIONS[self.convention]})", f"{len(self.names)} classes"]
        return bits + ([f"flags {', '.join(self.flags)}"] if self.flags else [])

    def label_names(self, value: Any) -> list[str]:
        labels = np.asarray(value["labels"]).tolist()
        return [self.names[i] if 0 <= i < len(self.names) else str(i) for i in labels]

    def summary(self, value: Any) -> str:
        return f"{len(value['boxes'])} boxes {self.label_names(value)}"

    def caption(self, value: Any) -> str | None:
        return ",".join(self.label_names(value))

    def draw(self, picture: Any, value: Any) -> Any:
        """Each box outlined in its class's colour."""
        from PIL import ImageDraw

        pen = ImageDraw.Draw(picture)
        for box, label in zip(np.asarray(value["boxes"]).tolist(), np.asarray(value["labels"]).tolist(), strict=True):
            pen.rectangle([round(v) for v in box], outline=class_colour(int(label)))
        return picture
