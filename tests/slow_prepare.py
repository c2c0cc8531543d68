"""``thresher`` with every record announced and every unit's encoding slowed, for interrupting on cue.

Run as a script (``python tests/slow_prepare.py prepare ...``). The fork server imports the main
script into every worker, so the slowdown below applies to the workers' encoding as well.
``THRESHER_TEST_MARKS`` is a directory: a file ``<split>-<index>`` appears there when the main
process takes that record to encode (or hands out the piece holding it, for recipes with inputs), and ``encoder-<pid>`` when a process (the main one or a
worker) first encodes. ``THRESHER_TEST_DELAY`` is seconds of sleep per unit in a worker (ten times that in the main process).
``THRESHER_TEST_SWALLOWED_AT`` names a unit (by its first record) whose encoding raises a Ctrl-C
that Python swallows.
Units hold one record each, so a miniature spreads over many units and shards.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from thresher.cli import main
from thresher.conversion import convert, pipeline
from thresher.conversion.pieces import Piece
from thresher.recipe import Recipe, RecordBatch
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


def announcing(records: Any) -> Any:
    def one_by_one(self: Recipe, split: str, files: Any) -> Iterator[Any]:
        index = 0
        for item in records(self, split, files):
            for record in [item.slice(i, i + 1) for i in range(len(item))] if isinstance(item, RecordBatch) else [item]:
                if MARKS:
                    Path(MARKS, f"{split}-{index}").touch()
                yield record
                index += 1

    return one_by_one


def announcing_pieces(work: Any) -> Any:
    """For recipes with inputs, whose records the workers read: announce a piece's records as it is handed out."""
    def handed_out(*args: Any) -> Iterator[Any]:
        for item in work(*args):
            if MARKS and isinstance(item, Piece):
                for index in range(item.start, item.start + item.count):
                    Path(MARKS, f"{item.split}-{index}").touch()
            yield item

    return handed_out


convert.encode_with = slow_encode_with
pipeline.unit_size = lambda plan: 1
pipeline._work = announcing_pieces(pipeline._work)
for recipe in all_recipes().values():
    type(recipe).records = announcing(type(recipe).records)

if __name__ == "__main__":
    sys.exit(main())
