"""A recipe with two variants, for the registry tests: each variant is one text file of its own.

Lines read ``<split>\\t<label>\\t<text>``; variant ``a`` (the default) and ``b`` differ in their
file and in their split counts, as VOC 2007 and 2012 do.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from thresher.errors import MalformedDataError
from thresher.recipe import Miniature, Recipe, Record, Source, Split, Variant
from thresher.schema import Field, Schema

LINES = {
    "a": [("train", 1, "one"), ("train", 2, "two"), ("train", 3, "three"), ("test", 4, "four")],
    "b": [("train", 5, "five"), ("test", 6, "six"), ("test", 7, "seven")],
}


def _splits(variant: str) -> tuple[Split, ...]:
    return tuple(Split(name, sum(1 for s, _, _ in LINES[variant] if s == name)) for name in ("train", "test"))


class Duo(Recipe):
    name = "duo"
    title = "Two editions of a tiny text dataset"
    description = "A test recipe: two variants, each one text file."
    license = "CC0 (test data)"
    variants = (
        Variant("a", "the first edition", sources=(Source("duo-a.txt", ("http://127.0.0.1:9/duo-a.txt",)),),
                splits=_splits("a")),
        Variant("b", "the second edition", sources=(Source("duo-b.txt", ("http://127.0.0.1:9/duo-b.txt",)),),
                splits=_splits("b")),
    )
    sources = variants[0].sources or ()
    splits = variants[0].splits or ()
    schema = Schema((Field("label", "int", dims=()), Field("text", "str")))

    def records(self, split: str, files: Mapping[str, Path]) -> Iterator[Record]:
        filename = f"duo-{self.variant}.txt"
        for number, line in enumerate(files[filename].read_text().splitlines(), 1):
            parts = line.split("\t")
            if len(parts) != 3 or not parts[1].isdigit():
                raise MalformedDataError(filename, f"line {number}", "expected split<TAB>label<TAB>text")
            if parts[0] == split:
                yield {"label": int(parts[1]), "text": parts[2]}

    def write_miniature(self, directory: Path) -> Miniature:
        lines = LINES[self.variant or "a"]
        path = directory / f"duo-{self.variant}.txt"
        path.write_text("".join(f"{s}\t{label}\t{text}\n" for s, label, text in lines))
        records = {split: [{"label": label, "text": text} for s, label, text in lines if s == split]
                   for split in ("train", "test")}
        return Miniature({path.name: path}, records)


RECIPE = Duo()
