"""Members of any archive a publisher ships: tar (plain, gz, bz2, xz), zip, and archives inside them.

One entry point, :func:`iter_archive`, sniffs what the bytes are and applies the same hostile-
archive rules to each kind; :func:`iter_nested` reads a member that is itself an archive
(ImageNet's train tar holds one tar per class), naming both levels in every error.
"""

from __future__ import annotations

from collections.abc import Iterator

from thresher.errors import MalformedDataError
from thresher.sources.archive import (
    DEFAULT_LIMITS,
    ArchiveSource,
    Limits,
    Member,
    describe_head,
    iter_tar,
    open_source,
    sniff_compression,
)
from thresher.sources.ziparchive import iter_zip

__all__ = ["iter_archive", "iter_nested"]

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
