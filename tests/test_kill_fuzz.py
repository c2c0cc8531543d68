"""Random SIGKILLs over multi-shard conversions: every rerun ends with the bytes of an uninterrupted run.

Each run converts a 3,000-record MNIST in the real layout into several shards per split, with
LMDB commits and HDF5 blocks small enough for many per shard, records re-cut into random
batches (a different cut every run, so nothing may depend on batching) and slowed a little so
that kills land everywhere: while workers start, mid-shard, while a finished shard is synced on
the background thread, while the manifest is switched. Kill times are drawn from a seeded
generator, so a failure names the delays that reproduce it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from e2e import check_interrupted_state, tree_bytes, write_mnist_mirror
from reliability_matrix import scenario

RUN = """
import random, sys, time
import thresher
from thresher.formats import hdf5_format, lmdb_format
from thresher.recipe import RecordBatch
from thresher.registry import get_recipe

lmdb_format.COMMIT_BYTES = 24_000
hdf5_format.BLOCK_BYTES = 48_000
cuts = random.Random(int(sys.argv[1]))
recipe = get_recipe("mnist")
original = type(recipe).records

def recut(self, split, files):
    for item in original(self, split, files):
        start = 0
        while start < len(item):
            stop = min(len(item), start + cuts.randint(1, 90))
            time.sleep(0.004)
            yield item.slice(start, stop)
            start = stop

type(recipe).records = recut
if __name__ == "__main__":
    workers = int(sys.argv[4])
    # Records that need only their codec are encoded in the main process whatever the worker
    # count; resized, they go to the workers, so the 2-worker runs kill real worker processes.
    options = thresher.ConvertOptions(resize=(20, 20)) if workers > 1 else None
    thresher.prepare("mnist", root=sys.argv[2], format=sys.argv[3], workers=workers, options=options,
                     shard_size=int(sys.argv[5]), **{kwargs!r})
"""
SHARD_SIZE = 150_000  # about 180 MNIST datums, not a multiple of any unit size
KILLS_PER_CHAIN = 2
CHAINS = 2


def start(script: Path, seed: int, root: Path, fmt: str, workers: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), str(seed), str(root), fmt, str(workers), str(SHARD_SIZE)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen) -> float:
    started = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return time.monotonic() - started


@scenario("9", "SIGKILL at random moments of multi-shard conversions in every format, with 1 and 2 workers, "
               "kills piling up before a run completes",
          "every completed rerun is byte-identical to an uninterrupted run; after every kill, nothing "
          "unrecorded is under a final name and progress is a contiguous run of shards",
          "24 seeded random kills (lmdb, minidb, hdf5 × 1 and 2 workers, chains of two kills then a rerun) "
          "with random batching per run and small LMDB commits/HDF5 blocks; all bytes compared")
def test_random_kills_resume_to_identical_bytes(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = write_mnist_mirror(tmp_path / "mirror", train=2400, test=600)
    script = tmp_path / "run.py"
    script.write_text(RUN.format(kwargs=kwargs))
    rng = random.Random(8)
    seed = 0
    for fmt in ("lmdb", "minidb", "hdf5"):
        for workers in (1, 2):
            reference_root = tmp_path / f"reference-{fmt}-{workers}"
            took = finish(start(script, seed, reference_root, fmt, workers))
            expected = tree_bytes(reference_root / "mnist" / fmt)
            assert len(json.loads((reference_root / "mnist" / fmt / "manifest.json").read_text())
                       ["splits"]["train"]["shards"]) >= 4
            for chain in range(CHAINS):
                root = tmp_path / f"killed-{fmt}-{workers}-{chain}"
                delays = []
                for _ in range(KILLS_PER_CHAIN):
                    seed += 1
                    delay = rng.uniform(0.2, took)
                    delays.append(round(delay, 3))
                    proc = start(script, seed, root, fmt, workers)
                    time.sleep(delay)
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    if (root / "mnist" / fmt).exists():
                        check_interrupted_state(root / "mnist" / fmt)
                seed += 1
                finish(start(script, seed, root, fmt, workers))
                assert tree_bytes(root / "mnist" / fmt) == expected, f"{fmt}, {workers} workers, kills after {delays} s"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
