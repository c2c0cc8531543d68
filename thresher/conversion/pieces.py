"""Splits divided into independent inputs: which inputs hold a range of records, and reading them.

A recipe that divides a split into inputs states each input's exact record count, so the
inputs of any source-index range follow from prefix sums. A worker or a shard task reads
only those, entering the first at its offset; a resumed run starts at the input holding
its first missing record. Nothing reads a split from record 0 to reach record N.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from thresher.conversion.convert import skip_records, take_records
from thresher.errors import MalformedDataError
from thresher.recipe import BadRecord, Input, Recipe, Record, RecordBatch

Item = Record | BadRecord | RecordBatch


@dataclass(frozen=True)
class Piece:
    """Records ``[start, start + count)`` of a split: ``parts`` in order, the first entered ``skip`` records in."""

    split: str
    start: int
    count: int
    parts: tuple[Input, ...]
    skip: int = 0


class InputPlan:
    """A split's inputs with the source index each one starts at, listed as far as asked.

    A recipe may list its inputs lazily (ImageNet counts each class tar's photos by walking its
    headers): pieces are then handed out while later inputs are still being listed, so workers
    start on the first class instead of waiting for the last one to be counted.
    """

    def __init__(self, inputs: Iterable[Input]) -> None:
        self.inputs: list[Input] = []  # listed so far
        self.offsets = [0]  # where each listed input starts, and where the last one ends
        self.pending: Iterator[Input] | None = iter(inputs)

    @property
    def total(self) -> int:
        """Records in the whole split (lists every input)."""
        while self._list_one():
            pass
        return self.offsets[-1]

    def piece(self, split: str, start: int, stop: int) -> Piece:
        """One piece holding records ``[start, stop)`` (clipped to the split), e.g. a shard's."""
        while self.offsets[-1] < stop and self._list_one():
            pass
        stop = min(stop, self.offsets[-1])
        if start >= stop:
            return Piece(split, start, 0, ())
        first = self._holding(start)
        last = self._holding(stop - 1)
        parts = tuple(part for part in self.inputs[first:last + 1] if part.records)  # an empty input holds none
        return Piece(split, start, stop - start, parts, start - self.offsets[first])

    def pieces(self, split: str, start: int, size: int) -> Iterator[Piece]:
        """Pieces of at most ``size`` records from ``start`` to the end: small inputs grouped, large ones cut."""
        position = start
        while self._listed_past(position):
            first = self._holding(position)
            end = self.offsets[first + 1]
            if end - position >= size:  # this input alone fills a piece: cut it
                yield self.piece(split, position, position + size)
                position += size
                continue
            last = first  # group whole inputs while they fit
            while self._listed_past(self.offsets[last + 1]) and self.offsets[last + 2] - position <= size:
                last += 1
            stop = self.offsets[last + 1]
            yield self.piece(split, position, stop)
            position = stop

    def _listed_past(self, index: int) -> bool:
        """List inputs until one holds source index ``index``; False if the split ends before it."""
        while self.offsets[-1] <= index:
            if not self._list_one():
                return False
        return True

    def _list_one(self) -> bool:
        """List the next input; False once all are listed."""
        part = next(self.pending, None) if self.pending is not None else None
        if part is None:
            self.pending = None
            return False
        if part.records < 0:
            raise ValueError(f"input {part.name!r} states a negative record count ({part.records})")
        self.inputs.append(part)
        self.offsets.append(self.offsets[-1] + part.records)
        return True

    def _holding(self, index: int) -> int:
        """The listed input that holds source index ``index`` (inputs of no records hold none)."""
        return bisect.bisect_right(self.offsets, index) - 1


def read_piece(recipe: Recipe, files: Mapping[str, Path], piece: Piece) -> Iterator[Item]:
    """The items of a piece, in order; an input that yields other than its stated count is an error."""
    remaining = piece.count
    for n, part in enumerate(piece.parts):
        skip = piece.skip if n == 0 else 0
        take = min(remaining, part.records - skip)
        items = _counted(recipe.read(piece.split, files, part), part)
        yield from take_records(skip_records(items, skip) if skip else items, take)
        if skip + take == part.records and next(items, None) is not None:  # read whole: nothing may follow
            raise _miscounted(part, "more")
        remaining -= take


def _counted(items: Iterator[Item], part: Input) -> Iterator[Item]:
    seen = 0
    for item in items:
        seen += len(item) if isinstance(item, RecordBatch) else 1
        yield item
    if seen < part.records:
        raise _miscounted(part, f"only {seen}")


def _miscounted(part: Input, found: str) -> MalformedDataError:
    return MalformedDataError(part.name, "", f"holds {found} records where its listing said {part.records}; "
                                             "the source or the recipe's listing of it is wrong")
