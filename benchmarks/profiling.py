"""Where the time goes: a cProfile of one un-timed run, boiled down to a few lines of facts.

The lines go into the "Analysis" section of docs/performance.md. They name functions by file
and line, so they stay meaningful while the code under test changes.
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OWN_CODE = ("/thresher/", "/recipes/")


def profile(func: Callable[[], Any]) -> tuple[Any, pstats.Stats]:
    profiler = cProfile.Profile()
    result = profiler.runcall(func)
    return result, pstats.Stats(profiler)


def facts(title: str, stats: pstats.Stats, *, top: int = 8) -> list[str]:
    """Markdown lines: total time, the functions with most own time, thresher's heaviest steps."""
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in entries.values()) or 1e-9
    by_own = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:top]
    ours = [(key, value) for key, value in entries.items() if _is_ours(key[0]) and key[2] != "<module>"]
    by_cumulative = sorted(ours, key=lambda item: item[1][3], reverse=True)[:top]
    lines = [f"**{title}** — {total:.2f} s under cProfile (profiling inflates Python-level calls).",
             "", "Most own time (the function itself, not its callees):", ""]
    lines += [f"1. `{_label(key)}` {value[2]:.2f} s ({value[2] / total:.0%}), {_calls(value[1])}"
              for key, value in by_own]
    lines += ["", "Heaviest thresher functions (cumulative, including callees):", ""]
    lines += [f"1. `{_label(key)}` {value[3]:.2f} s ({value[3] / total:.0%}), {_calls(value[1])}"
              for key, value in by_cumulative]
    return [*lines, ""]


def _calls(count: int) -> str:
    return f"{count:,} call{'' if count == 1 else 's'}"


def _is_ours(filename: str) -> bool:
    return any(part in filename for part in OWN_CODE) and "/benchmarks/" not in filename


def _label(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    if filename == "~" or not filename:
        return name
    path = Path(filename)
    try:
        short = path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        short = "/".join(path.parts[-2:])
    return f"{short}:{line} {name}"
