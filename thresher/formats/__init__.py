"""Storage formats by name."""

from __future__ import annotations

from thresher.formats.base import ShardContext, ShardReader, ShardWriter, StorageFormat
from thresher.formats.hdf5_format import Hdf5Format
from thresher.formats.lmdb_format import LmdbFormat
from thresher.formats.minidb import MinidbFormat

FORMATS: dict[str, StorageFormat] = {f.name: f for f in (LmdbFormat(), MinidbFormat(), Hdf5Format())}


def get_format(name: str) -> StorageFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)}") from None


__all__ = ["FORMATS", "ShardContext", "ShardReader", "ShardWriter", "StorageFormat", "get_format"]
