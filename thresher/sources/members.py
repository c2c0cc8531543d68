"""Members of any archive a publisher ships: tar (plain, gz, bz2, xz), zip, and archives inside them.

One entry point, :func:`iter_archive`, sniffs what the bytes are and applies the same hostile-
archive rules to each kind; :func:`iter_nested` reads a member that is itself an archive
(ImageNet's train tar holds one tar per class), naming both levels in every error.
:func:`members_in_order` is the join recipes need: a split lists members in its own order,
the archive holds them in another, and a compressed archive can only be walked once cheaply.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thresher.errors import MalformedDataError
from thresher.sources.archive import (
    DEFAULT_LIMITS,
    ArchiveSource,
    Limits,
    Member,
    describe_head,
    iter_tar,
    keep_for_this_prepare,
    keeping_for_this_prepare,
    open_source,
    sniff_compression,
    take_kept,
)
from thresher.sources.held import MEMORY_BUDGET, HeldMembers
from thresher.sources.ziparchive import iter_zip

__all__ = ["Listing", "iter_archive", "iter_nested", "members_in_order"]

_TAR_KINDS = ("tar", "gzip", "bz2", "xz")


def iter_archive(source: ArchiveSource, *, limits: Limits = DEFAULT_LIMITS, label: str | None = None
                 ) -> Iterator[Member]:
    """The regular files of a tar or zip (a path or a stream), each checked before it is yielded."""
    stream, head, label, path = open_source(source, label)
    kind = sniff_compression(head)
    reader = iter_zip if kind == "zip" else iter_tar if kind in _TAR_KINDS else None
    if reader is None:
        stream.close()
        what = "a zstd stream" if kind == "zstd" else f"not an archive: it {describe_head(head)}"
        raise MalformedDataError(label, "byte 0", f"is {what} (tar, tar.gz, tar.bz2, tar.xz or zip expected)")
    if path is not None:
        stream.close()  # the reader opens the file itself, to know where members lie in it
    yield from reader(path if path is not None else stream, limits=limits, label=label)


def iter_nested(member: Member, *, limits: Limits = DEFAULT_LIMITS) -> Iterator[Member]:
    """The members of ``member``, itself a tar or zip; read them before the outer walk moves on."""
    with member.open() as stream:
        yield from iter_archive(stream, limits=limits, label=member.location)


@dataclass(frozen=True)
class Listing:
    """A wanted order that lists inside the archive give (AN4's ``etc/`` files name the audio).

    ``members`` are read first (whole); ``order`` turns their bytes into the wanted names.
    Until all of them are met, members that ``maybe`` accepts are held, since the lists may
    come after what they list.
    """

    members: tuple[str, ...]
    order: Callable[[Mapping[str, bytes]], Sequence[str]]
    maybe: Callable[[str], bool]


def members_in_order(
    source: ArchiveSource,
    wanted: Sequence[str] | Listing,
    *,
    limits: Limits = DEFAULT_LIMITS,
    label: str | None = None,
    allow_missing: bool = False,
    keep_for_later: Collection[str] = (),
    memory_budget: int = MEMORY_BUDGET,
) -> Iterator[Member | None]:
    """Yield the ``wanted`` members in the order listed, from one walk over the archive.

    A member due when the walk reaches it is yielded live (stream it before asking for the
    next); one met earlier is held until its turn, by its extent when it has one (an
    uncompressed tar or a stored zip member: only a few numbers), else its bytes: in memory up
    to ``memory_budget``, past it in a temporary file beside the archive. A name listed twice is yielded twice. A listed member the archive lacks raises
    :class:`MalformedDataError` naming archive and member, or with ``allow_missing`` yields
    None in its place. ``keep_for_later`` members met on the way are held for a later call
    in the same ``prepare`` (see :func:`keep_for_this_prepare`), which then need not walk.
    """
    label = label or (str(source) if not hasattr(source, "read") else "<stream>")
    identity = file_identity(source)
    held = HeldMembers(label, None if hasattr(source, "read") else Path(source).parent, memory_budget)  # type: ignore[arg-type]
    join = _Join(label, allow_missing, held) if isinstance(wanted, Listing) else \
        _Join(label, allow_missing, held, wanted)
    if join.wanted is not None and identity is not None:
        for name in set(join.wanted):
            data = take_kept((*identity, name))
            if data is not None:
                join.held[name] = Member(name, len(data), None, label).with_bytes(data)
        yield from join.ready()
    later = set(keep_for_later) if identity is not None and keeping_for_this_prepare() else set()
    if not join.finished() or later:
        walk = iter_archive(source, limits=limits, label=label)
        try:
            for member in walk:
                if member.name in later:
                    later.discard(member.name)
                    data = member.read()
                    keep_for_this_prepare((*identity, member.name), data)  # type: ignore[misc]
                    member = member.with_bytes(data)
                yield from join.offer(member, wanted)
                if join.finished() and not later:
                    break
        finally:
            walk.close()
    if join.wanted is None:
        assert isinstance(wanted, Listing)
        missing = [name for name in wanted.members if name not in join.lists]
        raise MalformedDataError(label, f"member {missing[0]!r}", "is missing from the archive")
    yield from join.rest()


def file_identity(source: ArchiveSource) -> tuple[Any, ...] | None:
    """A file's identity, to find what an earlier walk of it kept (the start of a kept key); None for a stream."""
    if hasattr(source, "read"):
        return None
    status = os.stat(source)  # type: ignore[arg-type]
    return (os.path.realpath(source), status.st_dev, status.st_ino, status.st_size,  # type: ignore[arg-type]
            status.st_mtime_ns)


class _Join:
    """The state of one in-order walk: what is due next, what is held, how often each is still wanted."""

    def __init__(self, label: str, allow_missing: bool, store: HeldMembers, wanted: Sequence[str] | None = None
                 ) -> None:
        self.label, self.allow_missing, self.store = label, allow_missing, store
        self.held: dict[str, Member] = {}
        self.lists: dict[str, bytes] = {}  # a Listing's members, until the order is known
        self.wanted: list[str] | None = None
        self.position = 0
        self.uses: Counter[str] = Counter()
        if wanted is not None:
            self.plan(wanted)

    def plan(self, wanted: Sequence[str]) -> None:
        self.wanted = list(wanted)
        self.uses = Counter(self.wanted)
        for name in [name for name in self.held if name not in self.uses]:
            self.store.dropped(name)
            del self.held[name]

    def finished(self) -> bool:
        return self.wanted is not None and self.position == len(self.wanted)

    def offer(self, member: Member, wanted: Sequence[str] | Listing) -> Iterator[Member]:
        if self.wanted is None:  # a Listing whose lists are not all read yet
            assert isinstance(wanted, Listing)
            if member.name in wanted.members:
                self.lists[member.name] = member.read()
                if len(self.lists) == len(wanted.members):
                    self.plan(wanted.order(self.lists))
                    yield from self.ready()
            elif wanted.maybe(member.name) and member.name not in self.held:
                self.held[member.name] = self.store.keep(member)
            return
        name = member.name
        if not self.uses.get(name) or name in self.held:
            return  # not wanted (any more), or a second copy of a member already held
        if name == self.wanted[self.position] and self.uses[name] == 1:
            self.uses[name] -= 1
            self.position += 1
            yield member
        else:
            self.held[name] = self.store.keep(member)
        yield from self.ready()

    def ready(self) -> Iterator[Member]:
        """Held members now due, each dropped after its last listed use."""
        assert self.wanted is not None
        while self.position < len(self.wanted) and self.wanted[self.position] in self.held:
            name = self.wanted[self.position]
            self.uses[name] -= 1
            self.position += 1
            if self.uses[name]:
                yield self.held[name]
            else:
                self.store.dropped(name)
                yield self.held.pop(name)

    def rest(self) -> Iterator[Member | None]:
        """After the walk: what is still held, and the missing ones."""
        assert self.wanted is not None
        while self.position < len(self.wanted):
            yield from self.ready()
            if self.position == len(self.wanted):
                return
            name = self.wanted[self.position]
            if not self.allow_missing:
                raise MalformedDataError(self.label, f"member {name!r}", "is listed but missing from the archive")
            self.uses[name] -= 1
            self.position += 1
            yield None
