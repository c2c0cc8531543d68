"""Delimited text tables (UCI's ``.data`` files, census extracts) read with stated column types.

A publisher's table has no schema of its own: the recipe states each column's type, and every
cell is checked against it. A bad cell or a row of the wrong width becomes a
:class:`BadRecord` naming the file, line and column (``line 7, column 3 (petal_length)``), so
a run can skip it with --skip-bad; bytes that are not text, or a line the ``csv`` module
refuses, raise :class:`MalformedDataError`, since nothing after them can be trusted. Missing-value markers (UCI's ``?``) give ``None`` in columns that allow them.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from thresher.errors import MalformedDataError
from thresher.recipe import BadRecord

# Plain decimal numbers only: Python's float() and int() also take "nan", "inf" and "1_000".
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INT = re.compile(r"[+-]?\d+")
KINDS = ("float", "int", "category", "string")


@dataclass(frozen=True)
class Column:
    """One column: its name, its kind and, for a category, its names in index order.

    ``aliases`` maps other spellings to a name (UCI Adult's test labels end with a period);
    ``optional`` lets the table's missing-value markers stand for ``None`` here.
    """

    name: str
    kind: str = "float"
    names: tuple[str, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()
    optional: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"column {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if (self.kind == "category") != bool(self.names):
            raise ValueError(f"column {self.name!r}: a category column, and only one, lists its names")

    def parse(self, text: str) -> Any:
        """The cell's value; ValueError saying what is wrong with it."""
        if self.kind == "float":
            if not _FLOAT.fullmatch(text):
                raise ValueError(f"{text!r} is not a number")
            return float(text)
        if self.kind == "int":
            if not _INT.fullmatch(text):
                raise ValueError(f"{text!r} is not a whole number")
            return int(text)
        if self.kind == "category":
            name = dict(self.aliases).get(text, text)
            try:
                return self.names.index(name)
            except ValueError:
                raise ValueError(f"{text!r} is not one of {', '.join(self.names)}") from None
        return text


@dataclass(frozen=True)
class Table:
    """How a publisher's table is written: its columns and the text conventions around them.

    ``delimiter`` separates cells; spaces after it are skipped (UCI Adult writes ", ").
    ``header``: the first data line names the columns (checked against ours). ``skip_lines``:
    lines before it to ignore (Adult's test file starts with one). Blank lines may end the
    file; data after a blank line is an error, since a cut-and-joined file is not the published one.
    """

    columns: tuple[Column, ...]
    delimiter: str = ","
    header: bool = False
    skip_lines: int = 0
    missing: tuple[str, ...] = ()
    encoding: str = "utf-8"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


@dataclass(frozen=True)
class Row:
    """One data line's values by column name, and the line it came from (1-based)."""

    line: int
    values: dict[str, Any]


def read_table(source: Path | BinaryIO | bytes, table: Table, *, label: str | None = None
               ) -> Iterator[Row | BadRecord]:
    """The rows of ``source`` (a path, a binary stream or bytes) in file order.

    ``label`` names the source in messages (``iris.data``, ``archive.zip:adult.test``).
    """
    label = label or (source.name if isinstance(source, Path) else "<table>")
    if isinstance(source, Path):
        with source.open("rb") as stream:
            yield from _rows(stream, table, label)
    else:
        yield from _rows(io.BytesIO(source) if isinstance(source, bytes) else source, table, label)


def _rows(stream: BinaryIO, table: Table, label: str) -> Iterator[Row | BadRecord]:
    reader = csv.reader(_text_lines(stream, table.encoding, label), delimiter=table.delimiter,
                        skipinitialspace=True, strict=True)
    blank_at = 0
    header_due = table.header
    try:
        for cells in reader:
            line = reader.line_num
            if line <= table.skip_lines:
                continue
            if not cells or all(not c.strip() for c in cells):
                blank_at = blank_at or line
                continue
            if blank_at:
                raise MalformedDataError(label, f"line {line}", f"data after the blank line {blank_at}; "
                                         "blank lines may only end the table")
            if header_due:
                header_due = False
                _check_header(cells, table, label, line)
                continue
            yield _row(cells, table, label, line)
    except csv.Error as exc:
        raise MalformedDataError(label, f"line {reader.line_num}", f"is not a {table.delimiter!r}-delimited "
                                 f"line: {exc}") from None


def _text_lines(stream: BinaryIO, encoding: str, label: str) -> Iterable[str]:
    """Each line decoded on its own, so a bad byte is reported with its line."""
    for number, raw in enumerate(stream, 1):
        try:
            yield raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise MalformedDataError(label, f"line {number}, byte {exc.start}",
                                     f"is not {encoding} text ({raw[exc.start:exc.start + 1]!r})") from None


def _check_header(cells: Sequence[str], table: Table, label: str, line: int) -> None:
    got = tuple(c.strip() for c in cells)
    if got != table.names:
        raise MalformedDataError(label, f"line {line}", f"header names the columns {', '.join(got)}; "
                                 f"expected {', '.join(table.names)}")


def _row(cells: Sequence[str], table: Table, label: str, line: int) -> Row | BadRecord:
    if len(cells) != len(table.columns):
        return BadRecord(label, f"line {line}", f"has {len(cells)} columns, expected {len(table.columns)} "
                      f"({', '.join(table.names)})")
    values = {}
    for number, (column, cell) in enumerate(zip(table.columns, cells, strict=True), 1):
        text = cell.strip()
        if text in table.missing:
            if not column.optional:
                return BadRecord(label, f"line {line}, column {number} ({column.name})",
                              f"is missing ({text!r}), and {column.name} has no missing values")
            values[column.name] = None
            continue
        try:
            values[column.name] = column.parse(text)
        except ValueError as exc:
            return BadRecord(label, f"line {line}, column {number} ({column.name})", str(exc))
    return Row(line, values)
