"""Record schemas: what fields a recipe's records carry, and how each is stored.

A record is a plain ``dict`` mapping field names to values. The schema says, for each
field, what kind of value it holds, so that codecs, writers and the reader agree on it
without looking at the data:

- ``image``: ``numpy.uint8`` array of shape (H, W, C) in RGB (or (H, W, 1) grey) when
  raw, or the original file bytes when ``encoding`` is ``"jpeg"``/``"png"``;
- ``audio``: ``numpy.int16`` array of shape (N,) when raw, or FLAC bytes when
  ``encoding`` is ``"flac"``;
- ``int``: a Python ``int``; ``str``: a Python ``str``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Kind = Literal["image", "audio", "int", "str"]
KINDS: tuple[str, ...] = ("image", "audio", "int", "str")


@dataclass(frozen=True)
class Field:
    """One field of a record.

    ``shape`` is the fixed shape of a raw image (H, W, C) when every record has the same
    one, else ``None``. ``dims`` is the Caffe2 tensor shape written for scalar ints: ``(1,)``
    like ``make_cifar_db``/``make_image_db`` or ``()`` like ``make_mnist_db``.
    ``minimum``/``maximum`` bound ints (labels): values outside are malformed input.
    """

    name: str
    kind: Kind
    encoding: str = "raw"
    shape: tuple[int, ...] | None = None
    dims: tuple[int, ...] = (1,)
    minimum: int | None = None
    maximum: int | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name!r}: unknown kind {self.kind!r}")

    @property
    def is_encoded(self) -> bool:
        return self.encoding != "raw"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = list(self.shape) if self.shape is not None else None
        data["dims"] = list(self.dims)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Field:
        values = dict(data)
        if values.get("shape") is not None:
            values["shape"] = tuple(values["shape"])
        values["dims"] = tuple(values.get("dims", (1,)))
        return cls(**values)


@dataclass(frozen=True)
class Schema:
    """The ordered fields of a record; order is the order of Caffe2 tensors in a value."""

    fields: tuple[Field, ...] = field(default_factory=tuple)

    def __iter__(self):
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __getitem__(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self.fields)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def of_kind(self, kind: str) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.kind == kind)

    def replace_field(self, name: str, **changes: Any) -> Schema:
        """A copy with one field changed (e.g. image encoding after a resize option)."""
        return Schema(tuple(replace(f, **changes) if f.name == name else f for f in self.fields))

    def to_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self.fields]

    @classmethod
    def from_json(cls, data: list[Mapping[str, Any]]) -> Schema:
        return cls(tuple(Field.from_json(d) for d in data))

    def describe(self) -> list[str]:
        """One line per field for ``thresher info`` and ``inspect``."""
        lines = []
        for f in self.fields:
            bits = [f.kind]
            if f.encoding != "raw":
                bits.append(f"encoded {f.encoding}")
            if f.shape:
                bits.append("x".join(str(d) for d in f.shape))
            if f.minimum is not None and f.maximum is not None:
                bits.append(f"{f.minimum}..{f.maximum}")
            text = f"{f.name}: {', '.join(bits)}"
            if f.description:
                text += f"  ({f.description})"
            lines.append(text)
        return lines
