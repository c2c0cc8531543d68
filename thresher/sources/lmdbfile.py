"""Reading a published LMDB (LSUN's scenes) without liblmdb, in parts that need nothing before them.

A part is a run of consecutive leaf pages of the B-tree: :func:`parts` lists them from one walk
of the branch pages and leaf headers (no value is read), and :func:`items` yields the key and
value of each record of one part, in key order, from its own read-only map of the file. Every
page number, offset and size is checked (see thresher.formats.lmdb_pages), so a damaged file
gives a :class:`MalformedDataError` naming it, never a crash.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thresher.errors import MalformedDataError
from thresher.formats.lmdb_pages import Meta, current_meta, leaf_pages, leaf_records


@dataclass(frozen=True)
class Part:
    """Consecutive leaf pages of an LMDB and how many records they hold."""

    pages: tuple[int, ...]
    records: int


def _damage(label: str) -> Callable[[str], MalformedDataError]:
    return lambda problem: MalformedDataError(label, "LMDB data file", problem)


@contextmanager
def _mapped(path: Path, label: str) -> Iterator[tuple[Any, Meta]]:
    with open(path, "rb") as f:
        if not f.seek(0, 2):
            raise _damage(label)("the file is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield data, current_meta(data, _damage(label))


def parts(path: Path, label: str, records_per_part: int) -> list[Part]:
    """The LMDB's leaf pages in key order, grouped into parts of at least ``records_per_part`` records."""
    with _mapped(path, label) as (data, meta):
        leaves = leaf_pages(data, meta, _damage(label))
    grouped: list[Part] = []
    pages: list[int] = []
    count = 0
    for number, records in leaves:
        pages.append(number)
        count += records
        if count >= records_per_part:
            grouped.append(Part(tuple(pages), count))
            pages, count = [], 0
    if pages:
        grouped.append(Part(tuple(pages), count))
    return grouped


def items(path: Path, label: str, pages: Sequence[int]) -> Iterator[tuple[bytes, bytes]]:
    """Each record's key and value on leaf pages ``pages`` (one part), in key order."""
    with _mapped(path, label) as (data, meta):
        for key_at, key_size, value_at, value_size in leaf_records(data, meta, pages, _damage(label)):
            yield data[key_at:key_at + key_size], data[value_at:value_at + value_size]
