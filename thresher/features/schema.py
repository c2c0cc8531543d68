"""A record's schema: its ordered features (the order of Caffe2 tensors in a value)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from thresher.features.base import KINDS, Feature, feature_from_json
from thresher.features.image import Image
from thresher.features.integer import Integer


@dataclass(frozen=True)
class Schema:
    """The ordered fields of a record."""

    fields: tuple[Feature, ...] = field(default_factory=tuple)

    def __iter__(self) -> Iterator[Feature]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __getitem__(self, name: str) -> Feature:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self.fields)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def of_kind(self, kind: str) -> tuple[Feature, ...]:
        return tuple(f for f in self.fields if f.kind == kind)

    def of_type(self, cls: type) -> tuple[Any, ...]:
        return tuple(f for f in self.fields if isinstance(f, cls))

    def replace_field(self, name: str, **changes: Any) -> Schema:
        """A copy with one field changed (e.g. image encoding after a resize option)."""
        return Schema(tuple(replace(f, **changes) if f.name == name else f for f in self.fields))

    def to_json(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self.fields]

    @classmethod
    def from_json(cls, data: list[Mapping[str, Any]]) -> Schema:
        return cls(tuple(feature_from_json(d) for d in data))

    def describe(self) -> list[str]:
        """One line per field for ``thresher info`` and ``inspect``."""
        return [f.describe() for f in self.fields]


def classic_pair(schema: Schema) -> tuple[Image, Integer] | None:
    """(image, label) when the schema is exactly one image and one scalar int, as Caffe's nets read."""
    images = [f for f in schema if type(f) is Image]
    labels = [f for f in schema if isinstance(f, Integer) and f.scalar]
    if len(schema) == 2 and len(images) == 1 and len(labels) == 1:
        return images[0], labels[0]
    return None


def Field(name: str, kind: str, **options: Any) -> Feature:  # noqa: N802 - reads like the class it builds
    """The feature of kind ``kind`` (a manifest's kind name), e.g. ``Field("label", "int", maximum=9)``."""
    try:
        cls = KINDS[kind]
    except KeyError:
        raise ValueError(f"field {name!r}: unknown kind {kind!r}") from None
    return cls(name=name, **options)
