"""Limits from what the publisher says, and what to do when the files say otherwise.

Headers in downloaded files can claim any size. Each recipe states the published sizes and
counts; readers refuse a member or a header count over that times :data:`MARGIN` before
reading the data, so memory and disk stay bounded whatever the files claim. Within the
limit, a count that differs from the published one is an error, unless the user passed
``--checksums FILE`` (the files are then theirs, not the publisher's): the difference becomes
a warning in the run summary and the manifest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from thresher.errors import MalformedDataError
from thresher.sources.archive import Limits

if TYPE_CHECKING:
    from thresher.recipe import Recipe

# Room for a corrected re-release (a few more records), far too little for a bomb.
MARGIN = 1.5
BASIS = f"{MARGIN:g} × the published sizes"


def limit(published: int) -> int:
    """The most a file may hold or claim when the publisher says ``published``."""
    return math.ceil(published * MARGIN)


@dataclass(frozen=True)
class Contents:
    """What the publisher says an archive holds once unpacked: bytes, members, the largest member."""

    total_size: int
    members: int
    largest_member: int | None = None

    def limits(self, **overrides: int) -> Limits:
        """Archive limits of :data:`MARGIN` times these; ``overrides`` replace single fields."""
        limits = Limits.from_expected(self.total_size, members=self.members, factor=MARGIN,
                                      largest=self.largest_member, basis=BASIS)
        return replace(limits, **overrides)


@dataclass(frozen=True)
class Count:
    """How many of something a file's header says it holds, and where it says so."""

    source: str
    where: str
    what: str  # e.g. "images"
    found: int


def check_claim(count: Count, published: int) -> None:
    """Refuse a header count over the limit, before anything it counts is read."""
    if count.found > limit(published):
        raise MalformedDataError(
            count.source, count.where,
            f"header says {count.found:,} {count.what}; the publisher says {published:,}, and more than "
            f"{limit(published):,} ({BASIS}) is refused before reading them",
        )


def compare_counts(recipe: Recipe, split: str, files: Mapping[str, Path], *, overridden: bool) -> list[str]:
    """Warnings for the counts in the files that differ from the published ones.

    Raises :class:`MalformedDataError` for the first difference unless ``overridden`` (the user
    gave their own checksums for the source files, so they are not the published files).
    """
    published = recipe.split(split).num_records
    warnings = []
    for count in recipe.stated_counts(split, files):
        check_claim(count, published)
        if count.found == published:
            continue
        difference = f"{count.found:,} {count.what} where the publisher says {published:,} for {split}"
        if not overridden:
            raise MalformedDataError(
                count.source, count.where,
                f"{difference}; these are not the published files (pass --checksums FILE to convert files "
                "of your own)",
            )
        warnings.append(f"{count.source}: {difference} (--checksums overrides the published files)")
    return warnings
