"""Read downloaded zip archives (COCO, CelebA, MSO, LSUN ship zips) under the same rules as tars.

zipfile does the decoding; this module refuses what it would let through: unsafe names, links
and devices (from the Unix mode bits), more members or bytes than :class:`Limits` allow, sizes
whose ratio to the compressed bytes is absurd, entries whose data overlap (the way zip bombs
repeat one compressed block many times), encrypted members, and compression methods zipfile
cannot decode, each named. Data that disagrees with the sizes or CRC-32 the directory states is
a :class:`CorruptArchiveError` naming the member.
"""

from __future__ import annotations

import contextlib
import io
import lzma
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from thresher.errors import CorruptArchiveError, MalformedDataError, UnsafeArchiveError
from thresher.sources.archive import (
    DEFAULT_LIMITS,
    HEADER_SLACK,
    RATIO_GRACE,
    ArchiveSource,
    Limits,
    Member,
    WrappedStream,
    checked_name,
    open_source,
    refused_mode,
)
from thresher.sources.extent import Extent
from thresher.sources.perprocess import PerProcess

__all__ = ["ZipMemberRef", "iter_zip", "locate_zip_members"]

_LOCAL_HEADER = 30  # fixed part of a local file header, before its name and extra field
_METHODS = {0: "stored", 8: "deflate", 12: "bzip2", 14: "lzma"}  # what zipfile decodes
_OTHER_METHODS = {1: "shrink", 6: "implode", 9: "deflate64", 93: "zstandard", 95: "xz", 96: "jpeg",
                  97: "wavpack", 98: "ppmd", 99: "AES encryption"}
_DATA_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError)
_ENCRYPTED = 0x1


def iter_zip(source: ArchiveSource, *, limits: Limits = DEFAULT_LIMITS, label: str | None = None) -> Iterator[Member]:
    """Yield the regular files of a zip in directory order, checking each before it is read.

    A stream (e.g. a zip inside another archive) is first copied to a temporary file, at most
    ``limits.max_total_size`` bytes: a zip's directory is at its end.
    """
    raw, _, label, path = open_source(source, label)
    with contextlib.ExitStack() as stack:
        stack.callback(raw.close)
        if path is None:
            raw = stack.enter_context(_spooled(raw, label, limits))
        try:
            archive = stack.enter_context(zipfile.ZipFile(raw))  # type: ignore[arg-type]
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise CorruptArchiveError(label, "central directory",
                                      f"not a readable zip: truncated or damaged? ({exc})") from None
        infos = archive.infolist()
        if len(infos) > limits.max_members:
            raise UnsafeArchiveError(f"{label}: member {infos[limits.max_members].filename[:200]!r}: more than "
                                     f"{limits.max_members} members (the limit{limits.because()})")
        _refuse_overlaps(label, infos)
        status = os.fstat(raw.fileno()) if path is not None else None
        total = 0
        for info in infos:
            name = checked_name(label, info.filename, limits)
            refused = refused_mode(info.external_attr >> 16)
            if refused:
                raise UnsafeArchiveError(f"{label}: member {info.filename!r}: {refused}")
            if info.is_dir():
                continue
            if not name:
                raise UnsafeArchiveError(f"{label}: member {info.filename!r}: regular file with an empty name")
            _check_decodable(label, name, info)
            total = _check_sizes(label, name, info, limits, total)
            extent = None
            if status is not None and info.compress_type == zipfile.ZIP_STORED and \
                    info.file_size <= limits.max_read_size:
                extent = Extent(os.path.abspath(path), _data_offset(raw, label, name, info),  # type: ignore[arg-type]
                                info.file_size, name, status.st_ino, status.st_mtime_ns)
            yield Member(name, info.file_size, _opener(archive, info, label, name), label,
                         limits.max_read_size, extent)


@contextlib.contextmanager
def _spooled(stream: BinaryIO, label: str, limits: Limits) -> Iterator[BinaryIO]:
    """The stream's bytes in an anonymous temporary file (seekable, gone when closed)."""
    cap = limits.max_total_size + HEADER_SLACK
    with tempfile.TemporaryFile(prefix="thresher-zip-") as spool:
        copied = 0
        while chunk := stream.read(1 << 20):
            copied += len(chunk)
            if copied > cap:
                raise UnsafeArchiveError(f"{label}: zip is more than {cap} bytes (the limit{limits.because()})")
            spool.write(chunk)
        spool.seek(0)
        yield spool  # type: ignore[misc]


def _refuse_overlaps(label: str, infos: list[zipfile.ZipInfo]) -> None:
    """Entries sharing compressed bytes are how a small zip claims terabytes; real zips never do."""
    spans = sorted((info.header_offset, info.header_offset + _LOCAL_HEADER + info.compress_size, info.filename)
                   for info in infos)
    for (_, end, name), (start, _, following) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise UnsafeArchiveError(f"{label}: member {following!r}: its data overlaps member {name!r}'s "
                                     "(overlapping entries: a zip bomb?)")


def _check_decodable(label: str, name: str, info: zipfile.ZipInfo) -> None:
    if info.flag_bits & _ENCRYPTED:
        raise MalformedDataError(label, f"member {name!r}",
                                 "is encrypted; encrypted members are not read (no password is ever asked)")
    if info.compress_type not in _METHODS:
        method = _OTHER_METHODS.get(info.compress_type, "unknown")
        raise MalformedDataError(label, f"member {name!r}",
                                 f"uses compression method {info.compress_type} ({method}), which cannot be "
                                 f"read (supported: {', '.join(_METHODS.values())})")


def _check_sizes(label: str, name: str, info: zipfile.ZipInfo, limits: Limits, total: int) -> int:
    """Refuse from the directory's sizes, before reading; returns the new running total."""
    if info.file_size > limits.max_member_size:
        raise UnsafeArchiveError(f"{label}: member {name!r}: {info.file_size} bytes, over the member size limit "
                                 f"of {limits.max_member_size}{limits.because()}; refused from the zip directory, "
                                 "before reading it")
    total += info.file_size
    if total > limits.max_total_size:
        raise UnsafeArchiveError(f"{label}: member {name!r}: members so far total {total} bytes, over the limit "
                                 f"of {limits.max_total_size}{limits.because()}")
    if limits.max_ratio is not None and info.file_size > limits.max_ratio * info.compress_size + RATIO_GRACE:
        raise UnsafeArchiveError(f"{label}: member {name!r}: {info.compress_size} compressed bytes claim to expand "
                                 f"to {info.file_size} (more than Limits.max_ratio={limits.max_ratio}): "
                                 "compression bomb?")
    return total


def _data_offset(raw: BinaryIO, label: str, name: str, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes start: after its local header, whose lengths may differ from the directory's."""
    raw.seek(info.header_offset)
    header = raw.read(_LOCAL_HEADER)
    if len(header) < _LOCAL_HEADER or not header.startswith(b"PK\x03\x04"):
        raise CorruptArchiveError(label, f"member {name!r}", f"no local header at byte {info.header_offset}")
    name_length, extra_length = struct.unpack_from("<HH", header, 26)
    return info.header_offset + _LOCAL_HEADER + name_length + extra_length


class _ZipMemberStream(WrappedStream):
    """A member's bytes, with zipfile's errors turned into one naming the archive and member."""

    def __init__(self, inner: BinaryIO, label: str, name: str) -> None:
        super().__init__(inner)
        self.label, self.name = label, name

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data = self.inner.read(len(buffer))
        except _DATA_ERRORS as exc:
            raise CorruptArchiveError(self.label, f"member {self.name!r}",
                                      f"data do not match the size or CRC-32 in the zip directory ({exc}); "
                                      "damaged or forged?") from None
        buffer[: len(data)] = data
        return len(data)



def _opener(archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, name: str) -> Callable[[], BinaryIO]:
    def open_member() -> BinaryIO:
        if archive.fp is None:
            raise RuntimeError(f"{label}: member {name!r} was opened after the archive walk ended; "
                               "read members inside the loop")
        try:
            inner = archive.open(info)
        except _DATA_ERRORS as exc:
            raise CorruptArchiveError(label, f"member {name!r}", f"local header is damaged ({exc})") from None
        return io.BufferedReader(_ZipMemberStream(inner, label, name), buffer_size=256 << 10)  # type: ignore[return-value]

    return open_member


# -- one member, read alone in any process ------------------------------------------------------


@dataclass(frozen=True)
class ZipMemberRef:
    """A compressed member of a zip on disk, readable later by any process without the walk.

    A stored member has an :class:`Extent` instead (its bytes lie as they are). A deflated one
    must go through zipfile: each process opens the archive's directory once (kept open, see
    :class:`_OpenZips`) and then inflates only the members it is given, checking their CRC-32.
    ``inode`` and ``mtime_ns`` refuse an archive replaced since the walk, as an extent does.
    """

    path: str
    member: str
    size: int
    inode: int
    mtime_ns: int

    def read(self) -> bytes:
        archive = _open_zips.get(self)
        try:
            info = archive.getinfo(self.member)
            with archive.open(info) as stream:
                data = stream.read(self.size + 1)
        except KeyError:
            raise CorruptArchiveError(self.path, f"member {self.member!r}",
                                      "is no longer in the zip directory") from None
        except _DATA_ERRORS as exc:
            raise CorruptArchiveError(self.path, f"member {self.member!r}",
                                      f"data do not match the size or CRC-32 in the zip directory ({exc}); "
                                      "damaged or forged?") from None
        if len(data) != self.size:
            raise CorruptArchiveError(self.path, f"member {self.member!r}",
                                      f"holds {len(data)} bytes, the zip directory says {self.size}")
        return data


def _open_zip(ref: ZipMemberRef) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(ref.path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CorruptArchiveError(ref.path, "central directory", f"not a readable zip now ({exc})") from None
    status = os.fstat(archive.fp.fileno())  # type: ignore[union-attr]
    if (status.st_ino, status.st_mtime_ns) != (ref.inode, ref.mtime_ns):
        archive.close()
        raise CorruptArchiveError(ref.path, f"member {ref.member!r}",
                                  "the archive was replaced while it was being converted")
    return archive


class _OpenZips:
    """Zip archives open in this process (their directories read once), by the file's identity."""

    def __init__(self) -> None:
        self.archives: PerProcess[zipfile.ZipFile] = PerProcess(4, zipfile.ZipFile.close)

    def get(self, ref: ZipMemberRef) -> zipfile.ZipFile:
        return self.archives.get((ref.path, ref.inode, ref.mtime_ns), lambda: _open_zip(ref))


_open_zips = _OpenZips()


def locate_zip_members(path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS,
                       label: str | None = None) -> dict[str, Extent | ZipMemberRef]:
    """Where each regular member of the zip ``path`` lies, from one pass over its directory.

    Every member passes :func:`iter_zip`'s checks here; none is read. A name that occurs twice
    keeps its last entry, as zipfile does.
    """
    path = os.path.abspath(path)
    status = os.stat(path)
    found: dict[str, Extent | ZipMemberRef] = {}
    for member in iter_zip(path, limits=limits, label=label):
        found[member.name] = member.extent or ZipMemberRef(path, member.name, member.size, status.st_ino,
                                                           status.st_mtime_ns)
    return found
