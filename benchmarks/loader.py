"""Benchmark: a torch DataLoader over MNIST against ``ds.batches`` in the same run.

Both read the lmdb train split in shuffled batches of 256. The loader is the adapter's
``ds.torch().loader(...)``: one ``__getitems__`` call per batch and the adapter's collate.
With 2 workers the workers persist across passes, so the timed passes measure reading, not
process start-up (which the notes report separately). Target (issue): the loader reaches at
least half of the ``batches`` rate with 0 and with 2 workers.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import Table, Target, best_times, number, rate
from benchmarks.inputs import Workspace

NAME = "loader"
BATCH = 256
TARGET = Target(0.5, at_least=True)


def run(ws: Workspace, quick: bool) -> Table:
    import thresher

    table = Table(NAME, "A torch DataLoader over MNIST (lmdb) against ds.batches, same run")
    try:
        import torch  # noqa: F401 - only to say it is missing
    except ImportError:
        table.failures.append("PyTorch is not installed: pip install 'thresher[torch]'")
        return table
    inputs = ws.mnist()
    ds = thresher.open(ws.prepared(inputs, "lmdb") / "train")
    n = len(ds)
    repeats = 2 if quick else 5
    try:
        started = time.perf_counter()
        loader2 = ds.torch().loader(BATCH, shuffle=True, num_workers=2, persistent_workers=True)
        first = _count(loader2)
        startup = time.perf_counter() - started
        loader0 = ds.torch().loader(BATCH, shuffle=True, num_workers=0)
        passes = [lambda: sum(len(b["label"]) for b in ds.batches(BATCH, shuffle=True, seed=0)),
                  lambda: _count(loader0), lambda: _count(loader2)]
        base, zero, two = best_times(passes, repeats=repeats, budget=30.0)
    finally:
        ds.close()
    table.add(f"MNIST train ({n:,}) · lmdb · `ds.batches({BATCH}, shuffle=True)`", rate(n, base, "rec"),
              "", None, "baseline")
    for workers, seconds in ((0, zero), (2, two)):
        table.add(f"MNIST train ({n:,}) · lmdb · DataLoader, {workers} workers", rate(n, seconds, "rec"),
                  f"batches {number(n / base)} rec/s", base / seconds, f"{base / seconds:.2f}× of batches", TARGET)
    if first != n:
        table.failures.append(f"the 2-worker loader gave {first:,} records, the split holds {n:,}")
    table.notes += [
        f"Best of {repeats} passes each, run in turns; shuffled order in every case.",
        f"Starting the 2 persistent workers and their first pass took {startup:.2f} s (not in the timed passes).",
    ]
    return table


def _count(loader: Any) -> int:
    return sum(len(batch["label"]) for batch in loader)
