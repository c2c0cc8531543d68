"""Storage formats by name, each imported on first use.

A format module imports its storage library (lmdb, h5py with numpy) at its top; importing
them all here made every ``thresher prepare`` that finds its output already done pay for them.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import NamedTuple

from thresher.formats.base import ShardContext, ShardReader, ShardWriter, StorageFormat


class _Entry(NamedTuple):
    module: str
    cls: str
    uses_codec: bool  # the class's own ``uses_codec``, known without importing it (a test compares them)


_ENTRIES = {
    "lmdb": _Entry("thresher.formats.lmdb_format", "LmdbFormat", True),
    "minidb": _Entry("thresher.formats.minidb", "MinidbFormat", True),
    "hdf5": _Entry("thresher.formats.hdf5_format", "Hdf5Format", False),
}
FORMATS: tuple[str, ...] = tuple(_ENTRIES)


def _entry(name: str) -> _Entry:
    try:
        return _ENTRIES[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)}") from None


@cache
def get_format(name: str) -> StorageFormat:
    entry = _entry(name)
    return getattr(importlib.import_module(entry.module), entry.cls)()


def uses_codec(name: str) -> bool:
    """Whether format ``name`` stores codec values (else arrays per field), without importing it."""
    return _entry(name).uses_codec


__all__ = ["FORMATS", "ShardContext", "ShardReader", "ShardWriter", "StorageFormat", "get_format", "uses_codec"]
