"""Benchmark 6: start-up of the ``thresher`` command, whole process, against ``python -c pass`` in the same run.

What a batch job hits most is ``thresher prepare mnist`` when the output already exists and the
sources are downloaded: everything it does is start-up. ``thresher list`` imports every recipe.
Each command runs as a fresh process, in turns with the baseline; the fastest run of each counts.
Every process may read and write cached bytecode, as an installed package's do, even where the
calling environment sets PYTHONDONTWRITEBYTECODE (compiling every module on every start is not
what a user's install pays). Target (issue): the command's time above the bare interpreter's is
at most 0.15 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import Table, Target, best_times
from benchmarks.inputs import Workspace

NAME = "startup"
BUDGET = Target(0.15, at_least=False, unit=" s")
REPEATS = 15
THRESHER = [sys.executable, "-m", "thresher.cli"]
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(ws: Workspace, quick: bool) -> Table:
    table = Table(NAME, "Start-up of the thresher command (whole process), against `python -c pass`")
    inputs = ws.mnist()
    root = ws.fresh("startup")
    prepare = [*THRESHER, "-q", "prepare", "mnist", "--root", str(root), "--download-dir",
               str(ws.downloads(inputs)), "--mirror", str(inputs.mirror), "--offline",
               "--checksums", str(inputs.checksums), "--no-progress"]
    _run(prepare)  # the conversion itself, once: every timed run finds the output done
    commands = {"`thresher list`": [*THRESHER, "list"],
                "`thresher prepare mnist`, output exists, sources downloaded": prepare}
    repeats = 3 if quick else REPEATS
    baseline, *times = best_times([lambda: _run([sys.executable, "-c", "pass"]),
                                   *(lambda c=c: _run(c) for c in commands.values())], repeats=repeats)
    for name, seconds in zip(commands, times, strict=True):
        extra = seconds - baseline
        table.add(name, f"{seconds * 1000:.0f} ms", f"{baseline * 1000:.0f} ms (`python -c pass`)", extra,
                  f"+{extra * 1000:.0f} ms", BUDGET)
    table.notes.append(f"Fastest of {repeats} runs of each, in turns; the ratio column is the time above the bare "
                       "interpreter's, which is what thresher's imports and work add.")
    table.analysis += [f"* {line}" for line in _heaviest_imports(prepare)] + [""]
    return table


def _run(command: list[str]) -> None:
    done = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                          check=False, env=ENV)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")


def _heaviest_imports(command: list[str], top: int = 6) -> list[str]:
    """The top-level imports that cost most in one run under ``python -X importtime``."""
    done = subprocess.run([sys.executable, "-X", "importtime", *command[1:]], capture_output=True, text=True,
                          check=True, env=ENV)
    rows = []
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
            rows.append((int(parts[1]), parts[2].strip()))
    rows.sort(reverse=True)
    return [f"`thresher prepare` (output exists) imports `{name}`: {micro / 1000:.0f} ms cumulative"
            for micro, name in rows[:top]]
