"""A recipe whose splits divide into independent inputs, for the tests of pieces, workers and Dask tasks.

The source ``parts.txt`` holds lines ``<split>\\t<input>\\t<label>\\t<text>``, each input's
lines together. ``inputs()`` scans the file once and gives each input its byte range, so
``read()`` seeks to it without reading what precedes. Every read is logged to
``parts.txt.reads`` (input name and bytes read, from any process) so tests can count what
was read; a file ``parts.txt.fail-<input>`` makes the next read of that input fail once.
A label ``bad`` is yielded as a BadRecord.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from thresher.features import Integer, Schema, Text
from thresher.recipe import BadRecord, Input, Miniature, Recipe, Record, Source, Split

SOURCE = "parts.txt"


class Parts(Recipe):
    name = "parts"
    title = "Records in independent inputs"
    description = "A test recipe: each split is several inputs of a few records each."
    license = "CC0 (test data)"
    sources = (Source(SOURCE, ("http://127.0.0.1:9/parts.txt",)),)
    splits = (Split("train", 0), Split("test", 0))
    schema = Schema((Integer("label", dims=()), Text("text")))

    def inputs(self, split: str, files: Mapping[str, Path]) -> Iterator[Input]:
        """Each input as soon as its lines end (listed lazily, as ImageNet counts its classes);
        each one listed is logged to ``parts.txt.events`` as ``listed <input>``."""
        current: list = []  # [name, offset, length, records] of the input being scanned
        offset = 0
        with open(files[SOURCE], "rb") as lines:
            for line in lines:
                fields = line.decode().split("\t")
                if fields[0] == split:
                    if current and current[0] != fields[1]:
                        yield _listed(files[SOURCE], *current)
                        current = []
                    current = current or [fields[1], offset, 0, 0]
                    current[2] = offset + len(line) - current[1]
                    current[3] += 1
                offset += len(line)
        if current:
            yield _listed(files[SOURCE], *current)

    def read(self, split: str, files: Mapping[str, Path], part: Input) -> Iterator[Record | BadRecord]:
        path = files[SOURCE]
        marker = path.with_name(f"{path.name}.fail-{part.name}")
        if marker.exists():
            marker.unlink()
            raise RuntimeError(f"injected failure reading input {part.name}")
        start, length = part.where
        with open(path, "rb") as source:
            source.seek(start)
            data = source.read(length)
        with open(path.with_name(path.name + ".reads"), "a") as log:
            log.write(f"{part.name} {len(data)} {os.getpid()}\n")
        _event(path, f"read {part.name}")
        for number, line in enumerate(data.decode().splitlines()):
            _, _, label, text = line.split("\t")
            if label == "bad":
                yield BadRecord(SOURCE, f"input {part.name} line {number}", "label is 'bad'")
            else:
                yield {"label": int(label), "text": text}

    def write_miniature(self, directory: Path) -> Miniature:
        raise NotImplementedError("tests write parts.txt themselves")


def _listed(path: Path, name: str, start: int, length: int, records: int) -> Input:
    _event(path, f"listed {name}")
    return Input(name, records, (start, length))


def _event(path: Path, what: str) -> None:
    with open(path.with_name(path.name + ".events"), "a") as log:
        log.write(what + "\n")


def write_parts(path: Path, sizes: dict[str, list[int]]) -> dict[str, list[Record]]:
    """Write ``parts.txt`` with inputs of the given record counts per split; return the records."""
    records: dict[str, list[Record]] = {}
    lines = []
    for split, counts in sizes.items():
        for number, count in enumerate(counts):
            for i in range(count):
                label = len(records.setdefault(split, []))
                text = f"{split} input {number} record {i} " + "x" * (label % 7)
                lines.append(f"{split}\t{split}-{number:03d}\t{label}\t{text}\n")
                records[split].append({"label": label, "text": text})
    path.write_text("".join(lines))
    return records


RECIPE = Parts()
