"""Readers that slice records out of one read-only map of a shard file, through an index built once.

The index is built by a format-specific walk that checks every offset and length against the
file, so reads afterwards are plain bounds-checked slices: no library sees the damaged bytes.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from thresher.codecs.base import ValueLayout
from thresher.errors import CorruptShardError
from thresher.formats.base import ShardReader
from thresher.formats.damage import damaged, expected_size, map_file, unmap
from thresher.formats.fixed import FixedRecords

Record = tuple[int, int, int, int]  # key offset, key length, value offset, value length


class MappedReader(ShardReader):
    @abstractmethod
    def data_file(self) -> Path:
        """The one file holding the shard's records."""

    @abstractmethod
    def index(self, data: Any, damage: Callable[[str], CorruptShardError]) -> list[Record]:
        """Where every record lies in ``data``; ``damage(problem)`` makes the error to raise."""

    def _open(self) -> None:
        path = self.data_file()
        self.map = map_file(path, expected_size(self.expected_sizes, path.name))
        self.records = self.index(self.map, lambda problem: damaged(path, problem))
        self.fixed: FixedRecords | None = None

    def __len__(self) -> int:
        self._ensure_open()
        return len(self.records)

    def read(self, index: int) -> tuple[bytes, Any]:
        self._ensure_open()
        key, key_len, value, value_len = self.records[index]
        return bytes(self.map[key:key + key_len]), bytes(self.map[value:value + value_len])

    def values(self, start: int, stop: int) -> list[Any]:
        """Zero-copy views into the mapping; a batch decoder joins them once."""
        self._ensure_open()
        view = memoryview(self.map)
        return [view[v:v + vl] for _, _, v, vl in self.records[start:stop]]

    def fixed_records(self, layout: ValueLayout) -> FixedRecords:
        """Every value of this shard checked against ``layout`` (once per opening), for direct reads."""
        self._ensure_open()
        if self.fixed is None or self.fixed.layout is not layout:
            values = np.array([(v, vl) for _, _, v, vl in self.records], np.int64).reshape(-1, 2)
            self.fixed = FixedRecords(self.map, values, layout)
        return self.fixed

    def close(self) -> None:
        self.fixed = None  # its view of the map would keep the map open
        if self._pid is not None:
            unmap(self.map)
            self.records = []  # rebuilt on the next read: a closed shard holds no index
        super().close()
