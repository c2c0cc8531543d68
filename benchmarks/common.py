"""What every benchmark shares: targets that say by how much they are missed, result tables, timers.

A benchmark returns a :class:`Table`; ``__main__`` prints it and ``report`` writes it into
docs/performance.md. Correctness checks that fail (outputs that should be identical but
differ) are collected in ``Table.failures`` so the run can end non-zero after all tables are out.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MB = 1_000_000


@dataclass(frozen=True)
class Target:
    """A goal on one number: ``value >= limit`` (``at_least``) or ``value <= limit``."""

    limit: float
    at_least: bool
    unit: str = "×"

    def describe(self) -> str:
        return f"{'≥' if self.at_least else '≤'} {number(self.limit)}{self.unit}"

    def met(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit

    def verdict(self, value: float) -> str:
        """'yes', or 'no' with the size of the miss in the target's own terms."""
        if self.met(value):
            return "yes"
        if self.at_least:
            if value <= 0:
                return "no: nothing measured"
            return (f"no: {value / self.limit:.0%} of the target, "
                    f"needs {self.limit / value:.2f}× more")
        return f"no: {value / self.limit:.2f}× the limit ({value / self.limit - 1:.0%} over)"


@dataclass
class Row:
    """One line of a table: a measurement, its baseline, their ratio and the target on it."""

    name: str
    measured: str
    baseline: str
    ratio: str
    target: str = "—"
    met: str = "—"


@dataclass
class Table:
    """One benchmark's results plus the notes and profile facts that explain them."""

    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    analysis: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, name: str, measured: str, baseline: str, ratio: float | None, ratio_text: str,
            target: Target | None = None) -> Row:
        """Add a row; ``ratio`` is the number the target applies to (None: informational row)."""
        row = Row(name, measured, baseline, ratio_text)
        if target is not None and ratio is not None:
            row.target, row.met = target.describe(), target.verdict(ratio)
        self.rows.append(row)
        return row

    def markdown(self) -> str:
        head = ["| Measurement | Measured | Baseline | Ratio | Target | Met |", "|---|---|---|---|---|---|"]
        body = [f"| {r.name} | {r.measured} | {r.baseline} | {r.ratio} | {r.target} | {r.met} |" for r in self.rows]
        parts = [f"## {self.title}", "", *head, *body]
        if self.notes:
            parts += ["", *(f"* {note}" for note in self.notes)]
        if self.failures:
            parts += ["", *(f"* **CHECK FAILED:** {failure}" for failure in self.failures)]
        return "\n".join(parts)

    def missed(self) -> list[str]:
        return [f"{self.key} / {r.name}: {r.met}" for r in self.rows if r.met.startswith("no")]


def number(value: float) -> str:
    """Thousands separators for big numbers, two decimals for small ones."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def rate(count: float, seconds: float, unit: str) -> str:
    return f"{number(count / seconds)} {unit}/s" if seconds > 0 else f"∞ {unit}/s"


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call, with the garbage collector run before (not during) the timing."""
    gc.collect()
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def best_time(func: Callable[[], Any], *, repeats: int, budget: float = 20.0) -> float:
    """Fastest of up to ``repeats`` calls; stops repeating once ``budget`` seconds are spent.

    The fastest run is the one least disturbed by the rest of the machine; a long first run
    says enough on its own, so repeats are cut when they would make the suite crawl.
    """
    best = float("inf")
    spent = 0.0
    for _ in range(max(1, repeats)):
        seconds, _ = timed(func)
        best = min(best, seconds)
        spent += seconds
        if spent >= budget:
            break
    return best


def best_times(funcs: list[Callable[[], Any]], *, repeats: int, budget: float = 20.0) -> list[float]:
    """Fastest call of each function, run in turns (a, b, a, b, ...) so that a disturbance of the
    machine hits both sides rather than one; stops after ``budget`` seconds (each ran at least once)."""
    best = [float("inf")] * len(funcs)
    spent = 0.0
    for _ in range(max(1, repeats)):
        for i, func in enumerate(funcs):
            seconds, _ = timed(func)
            best[i] = min(best[i], seconds)
            spent += seconds
        if spent >= budget:
            break
    return best


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent not idle since boot (0 where /proc/stat is missing)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal; guest is counted in user


def background_load(seconds: float = 1.0) -> float:
    """Cores busy while this process sleeps: other work on the machine that would disturb timings."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    return (machine_busy_seconds() - before) / seconds


def shard_hashes(manifest: Any) -> list[tuple[str, str]]:
    """Path and sha256 of every shard file a manifest records, to compare two runs' outputs."""
    return [(f.path, f.sha256) for split in sorted(manifest.splits)
            for shard in manifest.splits[split].shards for f in shard.files]

