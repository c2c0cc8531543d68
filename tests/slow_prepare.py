"""``thresher`` with every record announced and every unit's encoding slowed, for interrupting on cue.

Run as a script (``python tests/slow_prepare.py prepare ...``). The fork server imports the main
script into every worker, so the slowdown below applies to the workers' encoding as well.
``THRESHER_TEST_MARKS`` is a directory: a file ``<split>-<index>`` appears there when the main
process takes that record to encode (or a worker reads it, for a recipe in independent inputs), and ``encoder-<pid>`` when a process (the main one or a
worker) first encodes. ``THRESHER_TEST_DELAY`` is seconds of sleep per unit in a worker (ten times that in the main process).
``THRESHER_TEST_SWALLOWED_AT`` names a unit (by its first record) whose encoding raises a Ctrl-C
that Python swallows.
Units hold one record each, so a miniature spreads over many units and shards.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from thresher.cli import main
from thresher.conversion import convert, pipeline
from thresher.recipe import Input, Recipe, RecordBatch
from thresher.registry import all_recipes

MARKS = os.environ.get("THRESHER_TEST_MARKS")
DELAY = float(os.environ.get("THRESHER_TEST_DELAY", "0"))
SWALLOWED_AT = int(os.environ.get("THRESHER_TEST_SWALLOWED_AT", "-1"))  # a unit whose encoding gets Ctrl-C
# The main process encodes while the workers start; slowed ten times more, it cannot finish a
# miniature before slow-starting workers (a loaded machine) take over, so they are seen encoding.
MAIN_PID = os.getpid() if __name__ == "__main__" else None
_encode_with = convert.encode_with


class Interrupting:
    """Sends this process a Ctrl-C while being destroyed, so that the KeyboardInterrupt is raised
    inside ``__del__``, where Python can only report it and carry on."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)


def slow_encode_with(plan: convert.EncodePlan, codec: Any, unit: convert.Unit) -> convert.Unit:
    if MARKS:
        Path(MARKS, f"encoder-{os.getpid()}").touch()
    if unit.start == SWALLOWED_AT:
        Interrupting()
    time.sleep(DELAY * 10 if os.getpid() == MAIN_PID else DELAY)
    return _encode_with(plan, codec, unit)


def announced(split: str, index: int, items: Iterator[Any]) -> Iterator[Any]:
    """``items`` one record at a time, each marked ``<split>-<index>`` as it is taken."""
    for item in items:
        for record in [item.slice(i, i + 1) for i in range(len(item))] if isinstance(item, RecordBatch) else [item]:
            if MARKS:
                Path(MARKS, f"{split}-{index}").touch()
            yield record
            index += 1


def announcing(records: Any) -> Any:
    def one_by_one(self: Recipe, split: str, files: Any) -> Iterator[Any]:
        yield from announced(split, 0, records(self, split, files))

    return one_by_one


def numbering(inputs: Any) -> Any:
    """Inputs that carry the index of their first record, for :func:`announcing_parts` in any process."""
    def numbered(self: Recipe, split: str, files: Any) -> list[Input] | None:
        parts = inputs(self, split, files)
        if parts is None:
            return None
        starts = itertools.accumulate((p.records for p in parts), initial=0)
        return [Input(p.name, p.records, (start, p.where)) for p, start in zip(parts, starts, strict=False)]  # starts ends with the total

    return numbered


def announcing_parts(read: Any) -> Any:
    def one_part(self: Recipe, split: str, files: Any, part: Input) -> Iterator[Any]:
        start, where = part.where
        yield from announced(split, start, read(self, split, files, Input(part.name, part.records, where)))

    return one_part


convert.encode_with = slow_encode_with
pipeline.unit_size = lambda plan: 1
for recipe in all_recipes().values():
    kind = type(recipe)
    kind.records = announcing(kind.records)
    if kind.inputs is not Recipe.inputs:  # workers read the inputs themselves: announce there
        kind.inputs, kind.read = numbering(kind.inputs), announcing_parts(kind.read)

if __name__ == "__main__":
    sys.exit(main())
