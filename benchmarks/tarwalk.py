"""The walk of an uncompressed tar's headers: thresher's checked walk against tarfile's own.

The walk lists a split before workers can start on it (Flowers' photo tar; Places205's has
2.5 million members), so it runs in the main process while the other cores wait. Thresher
reads plain headers itself and leaves every other header to tarfile; these rows are the
measurement that hand-written parsing has to justify against the standard library.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import Table, Target, best_times, number
from thresher.sources import archive
from thresher.sources.archive import iter_tar

TARGET = Target(1.0, at_least=True)  # the checked walk at least as fast as tarfile's bare listing


def walk_rows(table: Table, tar: Path, *, repeats: int) -> None:
    """Three walks of ``tar`` in turns: tarfile's bare listing, thresher's walk, and the same walk
    with tarfile reading every header (as before direct reading)."""
    count = sum(1 for _ in iter_tar(tar))
    bare, direct, through_tarfile = best_times([lambda: _tarfile_listing(tar), lambda: _walk(tar),
                                                lambda: _walk(tar, headers_by_tarfile=True)], repeats=repeats)
    table.add(f"tar header walk, {count:,} members: tarfile's own listing, no checks", _per_member(bare, count),
              "—", None, "—")
    table.add("thresher's checked walk (names, kinds, sizes, limits, extents)", _per_member(direct, count),
              f"tarfile's listing: {_per_member(bare, count)}", bare / direct,
              f"{number(bare / direct)}× tarfile's speed", TARGET)
    table.add("the same checked walk with tarfile reading every header", _per_member(through_tarfile, count),
              f"direct: {_per_member(direct, count)}", through_tarfile / direct,
              f"direct reading {number(through_tarfile / direct)}× faster", None)
    table.notes.append(
        f"Tar header walk: CPU-bound listing of the photo tar's headers, best of {repeats} in turns; the "
        "checked walk yields every member with its extent, as a split's listing does. Headers other than "
        "plain ustar/GNU/v7 files and directories go to tarfile either way.")


def _per_member(seconds: float, count: int) -> str:
    return f"{seconds * 1e6 / max(1, count):.1f} µs/member"


def _tarfile_listing(tar: Path) -> int:
    with tarfile.open(tar) as listing:
        return sum(1 for _ in listing)


def _walk(tar: Path, *, headers_by_tarfile: bool = False) -> int:
    parse: Callable[..., object] = archive.plain_header
    if headers_by_tarfile:
        archive.plain_header = lambda block, offset: None  # type: ignore[assignment]
    try:
        return sum(1 for _ in iter_tar(tar))
    finally:
        archive.plain_header = parse  # type: ignore[assignment]
