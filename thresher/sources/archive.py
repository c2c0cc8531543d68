"""Read downloaded archives without trusting them.

Archives come from the internet, so every member is checked before a recipe sees it: no
absolute or ``..`` paths, no links or devices, and sizes, name lengths and member counts
bounded by :class:`Limits` (so a "gzip bomb" or a pax header claiming gigabytes is refused
instead of filling memory or disk). Compression is recognised from the magic bytes, never the
file name (``102flowers.tgz`` is an uncompressed tar). Tars are streamed member by member, so
nothing is extracted to disk unless a recipe asks for :func:`safe_extract`.

A truncated or corrupt archive raises :class:`CorruptArchiveError` naming the archive and the
member, never a bare ``EOFError``/``tarfile.ReadError``.
"""

from __future__ import annotations

import bz2
import contextlib
import functools
import io
import lzma
import math
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from thresher.errors import CorruptArchiveError, MalformedDataError, ThresherError, UnsafeArchiveError
from thresher.sources.extent import Extent
from thresher.sources.readahead import ReadAhead
from thresher.sources.tarheaders import BLOCK, END_OF_ARCHIVE, next_header_offset, plain_header

__all__ = [
    "DEFAULT_LIMITS",
    "CorruptArchiveError",
    "Limits",
    "Member",
    "describe_head",
    "iter_tar",
    "iter_tar_at",
    "open_gzip",
    "read_tar_members",
    "safe_extract",
    "sniff_compression",
    "walking_each_tar_once",
]

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40

# Bytes the decompressed stream may run past the end of the current member's data before the
# next member header must have appeared. Covers tar headers, GNU long names, pax records and
# tarfile's read-ahead; anything larger is a header bomb.
HEADER_SLACK = 8 * MiB
# Bytes a compressed stream may produce before the ratio check starts to apply.
RATIO_GRACE = 1 * MiB
_TAR_BUFSIZE = 64 * KiB  # tarfile copies its buffer on every read: keep it small


@dataclass(frozen=True)
class Limits:
    """Upper bounds an archive must respect; exceeding one raises :class:`UnsafeArchiveError`.

    ``max_read_size`` bounds :meth:`Member.read` (whole member in memory); bigger members can
    still be streamed with :meth:`Member.open`. ``max_ratio`` (off by default) refuses streams
    whose decompressed size exceeds this many times the compressed bytes consumed. ``basis``
    says where the numbers come from (e.g. the published sizes), for error messages.
    """

    max_members: int = 10_000_000
    max_name_length: int = 4096
    max_member_size: int = 64 * GiB
    max_total_size: int = 2 * TiB
    max_read_size: int = 4 * GiB
    max_ratio: float | None = None
    basis: str = ""

    def __post_init__(self) -> None:
        for name in ("max_members", "max_name_length", "max_member_size", "max_total_size", "max_read_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"Limits.{name} must not be negative")
        if self.max_ratio is not None and self.max_ratio <= 0:
            raise ValueError("Limits.max_ratio must be positive")

    @classmethod
    def from_expected(cls, total_size: int, *, members: int | None = None, factor: float = 10.0,
                      largest: int | None = None, basis: str = "") -> Limits:
        """Limits for an archive whose published uncompressed size (and member count) is known.

        Allows ``factor`` times the expected size and count, so a slightly different re-release
        passes while a bomb does not. ``largest``, the biggest member's published size, bounds
        every member (and what one read may hold) tighter than the total does.
        """
        cap = math.ceil(total_size * factor)
        member_cap = cap if largest is None else min(cap, math.ceil(largest * factor))
        return cls(
            max_members=cls.max_members if members is None else math.ceil(members * factor) + 100,
            max_member_size=member_cap,
            max_total_size=cap,
            max_read_size=min(member_cap, cls.max_read_size),
            basis=basis,
        )

    def because(self) -> str:
        """`` (basis)`` for a message, or nothing."""
        return f" ({self.basis})" if self.basis else ""


DEFAULT_LIMITS = Limits()


@dataclass
class Member:
    """One regular file inside an archive.

    From :func:`iter_tar` a member can be read once, and only before the iterator advances
    (the archive is a stream). :meth:`from_bytes` makes an in-memory one, e.g. for tests.
    """

    name: str
    size: int
    _opener: Callable[[], BinaryIO] | None = field(default=None, repr=False, compare=False)
    _source: str = field(default="", repr=False, compare=False)
    _max_read: int | None = field(default=None, repr=False, compare=False)
    extent: Extent | None = field(default=None, repr=False, compare=False)
    """Where the bytes lie when the archive is uncompressed (and they fit ``read``): another
    process can read them later, after the iterator has moved on."""

    @property
    def location(self) -> str:
        """``archive:member``, the label of an archive nested in this member."""
        return f"{self._source}:{self.name}"

    def kept(self) -> Member:
        """This member, readable after the walk moves on: by its extent, else its bytes read now."""
        if self.extent is not None:
            return Member(self.name, self.size, functools.partial(_open_extent, self.extent), self._source,
                          self._max_read, self.extent)
        return self.with_bytes(self.read())

    def with_bytes(self, data: bytes) -> Member:
        """A member of the same name and archive whose bytes are ``data`` (read or kept earlier)."""
        return self.with_opener(lambda: io.BytesIO(data), len(data))

    def with_opener(self, opener: Callable[[], BinaryIO], size: int) -> Member:
        """A member of the same name and archive whose ``size`` bytes ``opener`` gives (kept elsewhere)."""
        return Member(self.name, size, opener, self._source, self._max_read)

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> Member:
        return cls(name, len(data), lambda: io.BytesIO(data), "<memory>")

    def open(self) -> BinaryIO:
        """A streaming file object over the member's bytes (read it before advancing)."""
        if self._opener is None:
            raise RuntimeError(f"member {self.name!r} has no data attached")
        return self._opener()

    def read(self) -> bytes:
        """The whole member, refused if larger than ``Limits.max_read_size``."""
        if self._max_read is not None and self.size > self._max_read:
            raise UnsafeArchiveError(
                f"{self._source}: member {self.name!r}: {self.size} bytes is more than read() holds "
                f"in memory (Limits.max_read_size={self._max_read}); stream it with Member.open()"
            )
        with self.open() as f:
            data = f.read()
        if len(data) != self.size:
            raise CorruptArchiveError(
                self._source, f"member {self.name!r}", f"holds {len(data)} bytes, its header says {self.size}"
            )
        return data


# -- sniffing -----------------------------------------------------------------------------------

_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"(\xb5/\xfd", "zstd"),
)


def _is_tar_header(block: bytes) -> bool:
    if len(block) < 512:
        return False
    if block[257:262] == b"ustar":
        return True
    if block[:512] == bytes(512):
        return True  # an empty archive: just the end-of-archive zero blocks
    field_ = block[148:156].replace(b"\x00", b" ").strip()
    if not field_ or not re.fullmatch(rb"[0-7]+", field_):
        return False
    stored = int(field_, 8)
    header = block[:148] + b" " * 8 + block[156:512]
    return stored in (sum(header), sum(b - 256 if b > 127 else b for b in header))


def sniff_compression(path_or_head: Path | str | os.PathLike[str] | bytes | bytearray | memoryview) -> str:
    """What the bytes are, from their magic: gzip, bz2, xz, zip, zstd, tar (uncompressed) or none."""
    if isinstance(path_or_head, (bytes, bytearray, memoryview)):
        head = bytes(path_or_head[:512])
    else:
        with open(path_or_head, "rb") as f:
            head = f.read(512)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if re.match(rb"BZh[1-9]", head):
        return "bz2"
    return "tar" if _is_tar_header(head) else "none"


def describe_head(head: bytes) -> str:
    """A phrase saying what a file that is not the expected format looks like, for error messages."""
    if not head:
        return "is empty"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text[:1024]:
        return "looks like an HTML page (an error, login or quota page instead of the file?)"
    kind = sniff_compression(head)
    if kind != "none":
        return f"is {'an uncompressed tar archive' if kind == 'tar' else kind + ' data'}"
    sample = head[:60]
    if all(32 <= b < 127 or b in b"\t\r\n" for b in sample):
        return f"looks like text: {sample.decode('ascii')!r}"
    return f"starts with bytes {sample[:16].hex(' ')}"


# -- metered decompression ----------------------------------------------------------------------

_DECODE_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)


class _Meter(io.RawIOBase):
    """Decompressed bytes of an archive, counted against a ceiling that catches bombs."""

    def __init__(
        self,
        inner: BinaryIO,
        label: str,
        kind: str,
        *,
        ceiling: int | None,
        exceeded: Callable[[], str],
        raw: BinaryIO | None = None,
        max_ratio: float | None = None,
    ) -> None:
        super().__init__()
        self.inner, self.label, self.kind = inner, label, kind
        self.ceiling, self.exceeded = ceiling, exceeded
        self.raw, self.max_ratio = raw, max_ratio
        self.pos = 0
        self.context = ""  # which member we are in, for messages

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        """An uncompressed tar on disk: the walk seeks over member data instead of reading it."""
        return self.kind == "tar" and self.inner.seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if not self.seekable():
            raise io.UnsupportedOperation("seek")
        self.pos = self.inner.seek(offset, whence)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            n = self.inner.readinto(buffer)  # type: ignore[attr-defined]
        except _DECODE_ERRORS as exc:
            if self.kind in ("none", "tar"):
                raise
            where = f"{self.context}, " if self.context else ""
            raise CorruptArchiveError(
                self.label,
                f"{where}decompressed byte {self.pos}",
                f"{self.kind} data is truncated or corrupt ({exc or type(exc).__name__})",
            ) from None
        self.pos += n or 0
        if self.ceiling is not None and self.pos > self.ceiling:
            raise UnsafeArchiveError(self.exceeded())
        if self.max_ratio is not None and self.raw is not None:
            consumed = self.inner.source_position if isinstance(self.inner, ReadAhead) else self.raw.tell()
            if self.pos > self.max_ratio * consumed + RATIO_GRACE:
                raise UnsafeArchiveError(
                    f"{self.label}: {self.context or 'start of archive'}: {consumed} compressed bytes "
                    f"expand to over {self.pos} (more than Limits.max_ratio={self.max_ratio}): compression bomb?"
                )
        return n or 0

    def close(self) -> None:
        if not self.closed:
            try:
                self.inner.close()
                if self.raw is not None:
                    self.raw.close()
            finally:
                super().close()


class _GzipStream(io.RawIOBase):
    """gzip decompressed from large input blocks.

    ``gzip.GzipFile`` under tarfile ends up inflating a few KiB per call, which made a
    170 MB CIFAR archive cost tens of thousands of Python calls. zlib with ``wbits=31``
    still checks each member's CRC and length; output per call is bounded (no bomb in one
    step), concatenated members are followed, zero padding after the last one is ignored.
    """

    BLOCK = 1 << 20

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self.raw = raw
        self.inflate = zlib.decompressobj(31)
        self.input = b""  # compressed bytes not yet given to zlib
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = len(buffer)
        while want and not self.done:
            if self.inflate.eof:
                self._next_member()
                continue
            data = self.inflate.unconsumed_tail or self.input or self.raw.read(self.BLOCK)
            self.input = b""
            if not data:
                raise EOFError("compressed file ended before the end-of-stream marker was reached")
            out = self.inflate.decompress(data, want)
            if self.inflate.eof:
                self.input = self.inflate.unused_data
            if out:
                buffer[: len(out)] = out
                return len(out)
        return 0

    def _next_member(self) -> None:
        rest = self.input or self.raw.read(self.BLOCK)
        while rest and not rest.strip(b"\0"):  # zero padding after the last member
            rest = self.raw.read(self.BLOCK)
        if not rest:
            self.done = True
            return
        if not rest.startswith(b"\x1f\x8b"):
            raise OSError("trailing data after the last gzip member is not gzip")
        self.inflate = zlib.decompressobj(31)
        self.input = rest

    def close(self) -> None:
        if not self.closed:
            self.raw.close()
            super().close()


def _decompressor(raw: BinaryIO, kind: str) -> BinaryIO:
    """The decompressed bytes of ``raw``, inflated ahead on a thread when ``kind`` is compressed."""
    if kind in ("gzip", "bz2", "xz"):
        return ReadAhead(_inflater(raw, kind), position=raw.tell)  # type: ignore[return-value]
    return raw


def _inflater(raw: BinaryIO, kind: str) -> BinaryIO:
    if kind == "gzip":
        return _GzipStream(raw)  # type: ignore[return-value]
    if kind == "bz2":
        return bz2.BZ2File(raw, mode="rb")  # type: ignore[return-value]
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb")  # type: ignore[return-value]
    return raw


def open_gzip(path: Path | str, *, limit: int | None) -> BinaryIO:
    """Stream the decompressed bytes of one ``.gz`` file (e.g. MNIST's idx files).

    Raises :class:`UnsafeArchiveError` once the output passes ``limit`` bytes (gzip bomb) and
    :class:`MalformedDataError` if the file is not gzip at all, saying what it looks like.
    """
    label = str(path)
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head.startswith(b"\x1f\x8b"):
        raise MalformedDataError(label, "byte 0", f"expected a gzip file, but it {describe_head(head)}")
    raw = open(path, "rb")  # noqa: SIM115 - closed by the returned reader
    meter = _Meter(
        _decompressor(raw, "gzip"),
        label,
        "gzip",
        ceiling=limit,
        exceeded=lambda: f"{label}: decompresses to more than {limit} bytes (the limit): gzip bomb?",
        raw=raw,
    )
    return io.BufferedReader(meter, buffer_size=256 * KiB)  # type: ignore[return-value]


def gzip_head(path: Path | str, size: int) -> bytes:
    """The first ``size`` decompressed bytes of a ``.gz`` file (a header), inflating no more than that.

    Cheap enough to call before the real pass: no read-ahead, at most a few kilobytes read.
    """
    label = str(path)
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = b""
    with open(path, "rb") as f:
        pending = f.read(4096)
        if not pending.startswith(b"\x1f\x8b"):
            raise MalformedDataError(label, "byte 0", f"expected a gzip file, but it {describe_head(pending)}")
        while pending and len(out) < size:
            try:
                out += inflater.decompress(pending, size - len(out))
            except zlib.error as exc:
                raise CorruptArchiveError(label, "gzip stream", f"does not inflate: {exc}") from None
            pending = inflater.unconsumed_tail or f.read(4096)
    return out


# -- tar ----------------------------------------------------------------------------------------

_DRIVE = re.compile(r"^[A-Za-z]:")


def checked_name(label: str, raw: str, limits: Limits) -> str:
    """The member name as a normalised relative POSIX path, or UnsafeArchiveError (tar and zip alike)."""

    def refuse(problem: str) -> UnsafeArchiveError:
        shown = raw if len(raw) <= 200 else raw[:200] + f"... ({len(raw)} chars)"
        return UnsafeArchiveError(f"{label}: member {shown!r}: {problem}")

    if len(raw) > limits.max_name_length:
        raise refuse(f"name is {len(raw)} characters, over the limit of {limits.max_name_length}")
    if "\x00" in raw:
        raise refuse("name contains a NUL byte")
    if raw.startswith("/") or _DRIVE.match(raw):
        raise refuse("absolute path")
    if "\\" in raw:
        raise refuse("name contains a backslash (a Windows path separator)")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise refuse("path has a '..' component and would escape the target")
    return "/".join(parts)


class WrappedStream(io.RawIOBase):
    """A readable raw stream over ``inner`` that closes ``inner`` when it is closed."""

    def __init__(self, inner: BinaryIO) -> None:
        super().__init__()
        self.inner = inner

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            try:
                self.inner.close()
            finally:
                super().close()


@dataclass
class _Cursor:
    """Which member is current; members of older generations are stale."""

    generation: int = 0


class _MemberStream(WrappedStream):
    def __init__(self, inner: BinaryIO, cursor: _Cursor, generation: int, label: str, name: str) -> None:
        super().__init__(inner)
        self.cursor, self.generation = cursor, generation
        self.label, self.name = label, name

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.cursor.generation != self.generation:
            raise RuntimeError(
                f"{self.label}: member {self.name!r} was read after the archive iterator moved on; "
                "read members inside the loop"
            )
        try:
            return self.inner.readinto(buffer)  # type: ignore[attr-defined]
        except tarfile.TarError as exc:
            raise CorruptArchiveError(
                self.label,
                f"member {self.name!r}",
                f"archive ends inside this member's data ({exc}); truncated?",
            ) from None



def _opener(open_data: Callable[[], BinaryIO], cursor: _Cursor, label: str, name: str) -> Callable[[], BinaryIO]:
    """Opens a member's data (``open_data``) once, and only while the walk is still at the member."""
    generation = cursor.generation
    opened = False

    def open_member() -> BinaryIO:
        nonlocal opened
        if cursor.generation != generation:
            raise RuntimeError(
                f"{label}: member {name!r} was opened after the archive iterator moved on; "
                "read members inside the loop"
            )
        if opened:
            raise RuntimeError(
                f"{label}: member {name!r} was already opened; a streamed archive is read once"
            )
        opened = True
        stream = _MemberStream(open_data(), cursor, generation, label, name)
        return io.BufferedReader(stream, buffer_size=256 * KiB)  # type: ignore[return-value]

    return open_member


class _Positional:
    """Reads at offsets of an uncompressed tar on disk (a file, or a window of one), leaving its stream alone."""

    def __init__(self, raw: BinaryIO) -> None:
        if isinstance(raw, _Window):
            self.fd, self.start, self.end = raw.fileno(), raw.start, raw.size
        else:
            self.fd, self.start = raw.fileno(), 0
            self.end = os.fstat(self.fd).st_size

    def read(self, offset: int, size: int) -> bytes:
        size = max(0, min(size, self.end - offset))
        return os.pread(self.fd, size, self.start + offset) if size else b""

    def data(self, info: tarfile.TarInfo) -> BinaryIO:
        """A member's data, read where it lies."""
        return _Slice(self, info.offset_data, info.size)  # type: ignore[return-value]


class _Slice(io.RawIOBase):
    """``size`` bytes at ``offset`` of a :class:`_Positional` tar; ending early is tarfile's "unexpected end"."""

    def __init__(self, tar: _Positional, offset: int, size: int) -> None:
        super().__init__()
        self.tar, self.offset, self.left = tar, offset, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self.left)
        if not want:
            return 0
        data = self.tar.read(self.offset, want)
        if not data:
            raise tarfile.ReadError("unexpected end of data")  # as tarfile says it; _MemberStream names the member
        buffer[: len(data)] = data
        self.offset += len(data)
        self.left -= len(data)
        return len(data)


def _kind_of_member(info: tarfile.TarInfo) -> str | None:
    """Why a non-regular member is refused, or None for regular files and directories."""
    if info.isreg() or info.isdir():
        return None
    if info.issym():
        return f"is a symbolic link to {info.linkname!r}"
    if info.islnk():
        return f"is a hard link to {info.linkname!r}"
    if info.ischr():
        return "is a character device"
    if info.isblk():
        return "is a block device"
    if info.isfifo():
        return "is a FIFO"
    return f"has unsupported tar type {info.type!r}"


def refused_mode(mode: int) -> str | None:
    """Why a member with these Unix mode bits (a zip's external attributes) is refused, or None."""
    kinds = ((stat.S_ISLNK, "is a symbolic link"), (stat.S_ISCHR, "is a character device"),
             (stat.S_ISBLK, "is a block device"), (stat.S_ISFIFO, "is a FIFO"), (stat.S_ISSOCK, "is a socket"))
    return next((why for test, why in kinds if test(mode)), None)


def _block(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _open_tar_stream(meter: _Meter, label: str, kind: str, tarinfo: type[tarfile.TarInfo],
                     where: str | None = None) -> tarfile.TarFile:
    """A tar reader over ``meter`` from its position: seeking over member data where it can, else
    streaming through it. ``where`` says which member a reader started mid-archive follows."""
    try:
        if meter.seekable():
            return tarfile.open(fileobj=meter, mode="r:", tarinfo=tarinfo)  # type: ignore[call-overload]
        return tarfile.open(fileobj=meter, mode="r|", tarinfo=tarinfo, bufsize=_TAR_BUFSIZE)  # type: ignore[call-overload]
    except tarfile.TarError as exc:
        if where is not None:  # as if the walk had read on to here
            raise CorruptArchiveError(label, where, f"truncated or corrupt tar ({exc})") from None
        inner = "" if kind == "tar" else f"{kind} data that is "
        raise CorruptArchiveError(
            label, "first member", f"{inner}not a readable tar archive ({exc})"
        ) from None


ArchiveSource = Path | str | os.PathLike[str] | BinaryIO
"""A file on disk, or a stream (e.g. a member of another archive, opened while its walk is there)."""


class _Replayed(WrappedStream):
    """A stream whose first bytes were read to sniff it, served again first; counts bytes read."""

    def __init__(self, head: bytes, inner: BinaryIO) -> None:
        super().__init__(inner)
        self.head, self.pos = memoryview(head), 0

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
        else:
            n = self.inner.readinto(buffer) or 0  # type: ignore[attr-defined]
        self.pos += n
        return n



def open_source(source: ArchiveSource, label: str | None = None) -> tuple[BinaryIO, bytes, str, str | None]:
    """``(stream from byte 0, first 512 bytes, label, path or None)`` for a path or a stream."""
    if hasattr(source, "read"):
        stream: BinaryIO = source  # type: ignore[assignment]
        head = b""
        while len(head) < 512:
            more = stream.read(512 - len(head))
            if not more:
                break
            head += more
        return _Replayed(head, stream), head, label or "<stream>", None  # type: ignore[return-value]
    path = os.fspath(source)  # type: ignore[arg-type]
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller's walk
    head = raw.read(512)
    raw.seek(0)
    return raw, head, label or str(source), path


def iter_tar(source: ArchiveSource, *, limits: Limits = DEFAULT_LIMITS, label: str | None = None) -> Iterator[Member]:
    """Yield the regular files of a tar (plain, gzip, bz2 or xz) one by one, checking each.

    ``source`` is a path or a stream (then ``label`` names it in messages, e.g. ``outer.tar:inner.tar``).
    Directories are skipped; anything unsafe raises :class:`UnsafeArchiveError` naming the
    archive and member; truncation or corruption raises :class:`CorruptArchiveError`.
    """
    raw, head, label, path = open_source(source, label)
    try:
        kind = sniff_compression(head)
        if kind in ("zip", "zstd"):
            raise MalformedDataError(label, "", f"is a {kind} archive, not a tar (with or without gzip/bz2/xz)")
        if kind == "none":
            raise MalformedDataError(label, "byte 0", f"is not a tar archive: it {describe_head(head[:1024])}")
    except BaseException:
        raw.close()
        raise
    if path is not None and kind == "tar" and _TAR_INDEXES.active:
        raw.close()
        yield from _TAR_INDEXES.members(path, label, limits)
    else:
        yield from _walk_tar(raw, label, kind, limits, path)


def iter_tar_at(extent: Extent, *, limits: Limits = DEFAULT_LIMITS, label: str | None = None) -> Iterator[Member]:
    """The members of the uncompressed tar lying at ``extent`` of a file (a tar inside a tar).

    ImageNet's train tar holds a tar per class: each can be walked alone, by seeking through
    its headers in the outer file, and every member comes with its extent in that file, so
    another process reads one image with one ``pread`` and nothing is extracted to disk. The
    walk never reads outside ``extent``; ``label`` (by default ``outer:inner``) names it in errors.
    """
    label = label or f"{os.path.basename(extent.path)}:{extent.member}"
    window = _Window(extent, label)
    try:
        head = window.read(512)
        kind = sniff_compression(head)
        if kind != "tar":
            raise MalformedDataError(label, "byte 0", f"is not an uncompressed tar: it {describe_head(head)}")
        window.seek(0)
    except BaseException:
        window.close()
        raise
    yield from _walk_tar(window, label, "tar", limits, extent.path, base=extent.offset)  # type: ignore[arg-type]


class _Window(io.RawIOBase):
    """The bytes of one extent as a seekable file of their own; the file must be the extent's."""

    def __init__(self, extent: Extent, label: str) -> None:
        super().__init__()
        self.file = open(extent.path, "rb")  # noqa: SIM115 - closed with the window
        status = os.fstat(self.file.fileno())
        if (status.st_ino, status.st_mtime_ns) != (extent.inode, extent.mtime_ns):
            self.file.close()
            raise CorruptArchiveError(extent.path, f"member {extent.member!r}",
                                      "the archive was replaced since it was listed")
        if status.st_size < extent.offset + extent.size:
            self.file.close()
            raise CorruptArchiveError(extent.path, f"member {extent.member!r}",
                                      f"file ends {extent.offset + extent.size - status.st_size} bytes "
                                      "before the member's end; truncated?")
        self.start, self.size, self.pos, self.label = extent.offset, extent.size, 0, label

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.file.fileno()

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        origin = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, origin + offset)
        return self.pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = max(0, min(len(buffer), self.size - self.pos))
        if not want:
            return 0
        data = os.pread(self.file.fileno(), want, self.start + self.pos)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.file.close()
            super().close()


@contextlib.contextmanager
def walking_each_tar_once() -> Iterator[None]:
    """Inside, an uncompressed tar walked to the end is not walked again (``prepare`` uses this).

    Only for archives that do not change meanwhile, as verified sources under ``prepare``'s
    lock do not: the index is keyed by the file's identity and modification time, whose
    clock ticks too coarsely to notice a rewrite of the same size within milliseconds.
    """
    _TAR_INDEXES.active += 1
    try:
        yield
    finally:
        _TAR_INDEXES.active -= 1
        if not _TAR_INDEXES.active:
            _TAR_INDEXES.indexes.clear()
            _TAR_INDEXES.kept.clear()


def keeping_for_this_prepare() -> bool:
    """Whether :func:`keep_for_this_prepare` holds anything here (inside walking_each_tar_once)."""
    return _TAR_INDEXES.active > 0


def keep_for_this_prepare(key: tuple[Any, ...], data: bytes) -> bool:
    """Hold ``data`` until the enclosing :func:`walking_each_tar_once` ends; False outside one.

    For a member one walk meets that a later walk of the same prepare wants (CIFAR-10's test
    batch, met while reading train from the same gzip stream): it is not inflated twice.
    """
    if not _TAR_INDEXES.active:
        return False
    _TAR_INDEXES.kept[key] = data
    return True


def take_kept(key: tuple[Any, ...]) -> bytes | None:
    """What :func:`keep_for_this_prepare` holds under ``key`` (handed over once), or None."""
    return _TAR_INDEXES.kept.pop(key, None)


class _TarIndexes:
    """Members of the uncompressed tars walked to the end, to walk each only once.

    A recipe reads one split per pass, so Flowers' tar was walked three times, in Python
    header by header; the walk was most of what the main process did beside the workers.
    An index is kept only for a complete, checked walk whose every member has an extent,
    and is keyed by the file's identity and the limits it was checked against.
    """

    KEEP = 4

    def __init__(self) -> None:
        self.indexes: OrderedDict[tuple[Any, ...], list[Extent]] = OrderedDict()
        self.active = 0  # open walking_each_tar_once() blocks
        self.kept: dict[tuple[Any, ...], bytes] = {}  # keep_for_this_prepare()

    def members(self, path: Path | str, label: str, limits: Limits) -> Iterator[Member]:
        status = os.stat(path)
        key = (os.path.realpath(path), status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, limits)
        index = self.indexes.get(key)
        if index is not None:
            self.indexes.move_to_end(key)
            for extent in index:
                yield Member(extent.member, extent.size, functools.partial(_open_extent, extent), label,
                             limits.max_read_size, extent)
            return
        seen: list[Extent] | None = []

        def note(member: Member) -> None:
            nonlocal seen
            if seen is not None:
                same_file = member.extent is not None and (member.extent.inode, member.extent.mtime_ns) == \
                    (status.st_ino, status.st_mtime_ns)
                if same_file:
                    seen.append(member.extent)  # type: ignore[arg-type]
                else:
                    seen = None

        walk = _walk_tar(open(path, "rb"), label, "tar", limits, os.fspath(path))  # noqa: SIM115
        complete = False
        try:
            for member in walk:
                note(member)
                yield member
            complete = True
        except GeneratorExit:
            # A walk left in the file's last tenth (a split's last wanted member met) is completed,
            # headers only: that costs at most a tenth of a walk and spares the next split a whole one.
            if self.active and seen and _reached(seen[-1], status.st_size - max(status.st_size // 10,
                                                                                 tarfile.RECORDSIZE)):
                try:
                    for member in walk:
                        note(member)
                    complete = True
                except ThresherError:
                    pass  # the next walk meets the damage and reports it
            raise
        finally:
            walk.close()
            if complete and seen is not None:
                self.indexes[key] = seen
                while len(self.indexes) > self.KEEP:
                    self.indexes.popitem(last=False)


def _reached(extent: Extent, offset: int) -> bool:
    return extent.offset + extent.size >= offset


def _open_extent(extent: Extent) -> BinaryIO:
    return io.BytesIO(extent.read())


_TAR_INDEXES = _TarIndexes()


def _walk_tar(raw: BinaryIO, label: str, kind: str, limits: Limits, path: str | None, base: int = 0
              ) -> Iterator[Member]:
    """iter_tar's checked walk of one archive, member by member; extents only for a file on disk.

    ``base`` is where the archive starts in the file at ``path`` (a tar inside a tar), so extents
    name the file's own offsets.
    """
    previous = ""

    def where() -> str:
        return f"after member {previous!r}" if previous else "first member"

    meter = _Meter(
        _decompressor(raw, kind),
        label,
        kind,
        ceiling=HEADER_SLACK,
        exceeded=lambda: (
            f"{label}: {where()}: tar header data larger than {HEADER_SLACK} bytes (header bomb?)"
        ),
        raw=raw,
        max_ratio=limits.max_ratio if kind != "tar" else None,
    )
    meter.context = where()
    cursor = _Cursor()
    status = os.fstat(raw.fileno()) if path is not None else None
    absolute = os.path.abspath(path) if path is not None else ""  # in extents: a worker may run elsewhere
    with meter, _Headers(raw, meter, label, kind, direct=kind == "tar" and path is not None) as headers:
        count = 0
        total = 0
        while True:
            found = headers.next(where)
            if found is None:
                break
            info, open_data = found
            count += 1
            if count > limits.max_members:
                raise UnsafeArchiveError(
                    f"{label}: member {info.name[:200]!r}: more than {limits.max_members} members "
                    f"(the limit{'; ' + limits.basis if limits.basis else ''})"
                )
            name = checked_name(label, info.name, limits)
            refused = _kind_of_member(info)
            if refused:
                raise UnsafeArchiveError(f"{label}: member {info.name!r}: {refused}")
            previous = name or info.name
            meter.context = f"member {previous!r}"
            if info.isdir():
                continue
            if not name:
                raise UnsafeArchiveError(f"{label}: member {info.name!r}: regular file with an empty name")
            if info.size > limits.max_member_size:
                raise UnsafeArchiveError(
                    f"{label}: member {name!r}: {info.size} bytes, over the member size limit "
                    f"of {limits.max_member_size}{limits.because()}; refused from its tar header, before reading it"
                )
            total += info.size
            if total > limits.max_total_size:
                raise UnsafeArchiveError(
                    f"{label}: member {name!r}: members so far total {total} bytes, over the limit "
                    f"of {limits.max_total_size}{limits.because()}"
                )
            extent = None
            if status is not None and kind == "tar" and info.size <= limits.max_read_size and not info.issparse():
                extent = Extent(absolute, base + info.offset_data, info.size, name, status.st_ino, status.st_mtime_ns)
            member = Member(name, info.size, _opener(open_data, cursor, label, name), label, limits.max_read_size,
                            extent)
            try:
                yield member
            finally:
                cursor.generation += 1

        if kind != "tar":
            # Read the (normally tiny) rest of the compressed stream so its checksum is verified.
            meter.context = where()
            meter.ceiling = None
            stop = meter.pos + HEADER_SLACK
            chunk = bytearray(64 * KiB)
            while meter.pos < stop and meter.readinto(chunk):
                pass


class _Headers:
    """A walk's member headers, each with a way to open its data.

    A tar on disk is read header by header straight from the file while its headers are plain
    (``direct``); at the first one that is not, tarfile reads the rest of the archive from
    there (see thresher.sources.tarheaders). Any other archive is tarfile's from the start.
    """

    def __init__(self, raw: BinaryIO, meter: _Meter, label: str, kind: str, *, direct: bool) -> None:
        self.meter, self.label, self.kind = meter, label, kind
        self.positional = _Positional(raw) if direct else None
        self.offset = 0  # of the next header, while reading directly
        self.ending: list[Exception] = []  # why tarfile stopped (see _recording)
        self.stack = contextlib.ExitStack()
        self.tar = None if direct else self._tarfile(None)

    def next(self, where: Callable[[], str]) -> tuple[tarfile.TarInfo, Callable[[], BinaryIO]] | None:
        """The next member's header and data opener; None at the end-of-archive marker."""
        if self.tar is None:
            assert self.positional is not None
            if self.offset > self.positional.end:  # the last member's data or padding is cut
                raise CorruptArchiveError(self.label, where(), "truncated or corrupt tar (unexpected end of data)")
            block = self.positional.read(self.offset, BLOCK)
            if block == END_OF_ARCHIVE and self.offset:  # a zero block first is tarfile's to judge
                return None
            info = plain_header(block, self.offset)
            if info is not None:
                self.offset = next_header_offset(info)
                return info, functools.partial(self.positional.data, info)
            self.meter.seek(self.offset)  # not a plain header: tarfile reads on from here
            self.meter.ceiling = self.offset + HEADER_SLACK
            self.tar = self._tarfile(where() if self.offset else None)
        self.ending.clear()
        self.meter.context = where()
        try:
            found = self.tar.next()
        except tarfile.TarError as exc:
            raise CorruptArchiveError(self.label, where(), f"truncated or corrupt tar ({exc})") from None
        if found is None:
            _check_ending(self.ending, self.label, where())
            return None
        self.tar.members.clear()  # stream mode keeps every TarInfo otherwise; 10M members would not fit
        self.meter.ceiling = found.offset_data + _block(found.size) + HEADER_SLACK
        return found, functools.partial(self.tar.extractfile, found)  # type: ignore[return-value]

    def _tarfile(self, where: str | None) -> tarfile.TarFile:
        return self.stack.enter_context(_open_tar_stream(self.meter, self.label, self.kind, self._recording(),
                                                         where))

    def _recording(self) -> type[tarfile.TarInfo]:
        """A TarInfo class that notes why tarfile stopped: only a zero block is a real end, and
        tarfile silently treats a missing or garbled header after the first as the end too."""
        ending = self.ending

        class RecordingTarInfo(tarfile.TarInfo):
            @classmethod
            def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
                try:
                    return super().fromtarfile(tarfile_)
                except tarfile.HeaderError as exc:
                    ending.append(exc)
                    raise

        return RecordingTarInfo

    def __enter__(self) -> _Headers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()


def _check_ending(ending: list[Exception], label: str, where: str) -> None:
    """Why tarfile stopped: only a zero block is a real end; it treats a missing or garbled header as one too."""
    end = ending[-1] if ending else None
    if not isinstance(end, tarfile.EOFHeaderError):
        problem = {
            tarfile.EmptyHeaderError: "archive ends without the end-of-archive marker",
            tarfile.TruncatedHeaderError: "archive ends inside a tar header",
            type(None): "archive starts with a zero block, the end-of-archive marker: no members, or a wiped header",
        }.get(type(end), f"invalid tar header ({end})")
        raise CorruptArchiveError(label, where, f"{problem}; truncated or corrupt download?")


def read_tar_members(
    path: Path | str,
    names: Iterable[str] | Callable[[str], bool],
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, bytes]:
    """The bytes of the wanted members, in one pass over the archive.

    With a list of names, stops as soon as all are found and raises :class:`MalformedDataError`
    if any is missing; with a predicate, reads every member it accepts.
    """
    if callable(names):
        wanted, accept = None, names
    else:
        wanted = {"/".join(p for p in n.split("/") if p not in ("", ".")) for n in names}
        accept = wanted.__contains__
    found: dict[str, bytes] = {}
    for member in iter_tar(path, limits=limits):
        if accept(member.name):
            found[member.name] = member.read()
            if wanted is not None and len(found) == len(wanted):
                break
    if wanted is not None and len(found) < len(wanted):
        missing = sorted(wanted - found.keys())
        raise MalformedDataError(str(path), "", f"archive has no member {', '.join(map(repr, missing))}")
    return found


def _make_parents(root: Path, parts: list[str], label: str, name: str) -> Path:
    """Create ``root/parts...`` refusing to go through any symlink already in the target."""
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise UnsafeArchiveError(
                f"{label}: member {name!r}: {current} is a symlink in the target; refusing to follow it"
            )
        if not current.exists():
            current.mkdir()
        elif not current.is_dir():
            raise UnsafeArchiveError(f"{label}: member {name!r}: {current} exists and is not a directory")
    return current


def safe_extract(path: Path | str, target_dir: Path | str, *, limits: Limits = DEFAULT_LIMITS) -> list[Path]:
    """Extract the regular files of a tar under ``target_dir``; returns the paths written.

    Each file is written under a temporary name then renamed, with mode 0644 (tar modes and
    owners are ignored). Links and devices are refused, not created; existing symlinks in the
    target are never followed. On error, files already extracted stay.
    """
    label = str(path)
    target = Path(target_dir)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    written: list[Path] = []
    for member in iter_tar(path, limits=limits):
        *parents, leaf = member.name.split("/")
        directory = _make_parents(root, parents, label, member.name)
        dest = directory / leaf
        if os.path.commonpath([root, directory.resolve()]) != str(root):
            raise UnsafeArchiveError(f"{label}: member {member.name!r}: would be written outside {root}")
        if dest.is_dir() and not dest.is_symlink():
            raise UnsafeArchiveError(f"{label}: member {member.name!r}: {dest} is an existing directory")
        fd, tmp = tempfile.mkstemp(prefix=f".{leaf[:40]}.", suffix=".part", dir=directory)
        try:
            with os.fdopen(fd, "wb") as out, member.open() as src:
                shutil.copyfileobj(src, out, MiB)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)  # replaces a symlink at dest itself, never its target
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        written.append(dest)
    return written
