"""Plain tar headers parsed straight from their 512 bytes: the common case of a big tar, read fast.

``tarfile`` parses each header with a dozen Python calls, most of the cost of walking an
uncompressed tar of photos, and that walk runs in the main process while workers wait for
a split's list (Places205's tar has 2.5 million members). A header is read here only when
``tarfile`` would read it the same way without any of its special cases: a regular file
or a directory, every number field plain octal, the unsigned checksum right, no pax or GNU
extension header. For anything else :func:`plain_header` answers None and the caller hands
the rest of the archive to ``tarfile`` from that header on, so unusual and damaged archives
are read, and refused, exactly as ``tarfile`` reads them. ``docs/performance.md`` has the
measured difference.
"""

from __future__ import annotations

import re
import tarfile

BLOCK = tarfile.BLOCKSIZE
END_OF_ARCHIVE = bytes(BLOCK)  # a zero block ends the archive, as for tarfile

# A number field as tarfile's parser reads it without error: octal digits between ASCII blanks,
# ending at the field's end or at a NUL (whatever follows a NUL is ignored). Base-256 numbers,
# other blanks and anything odd do not match and are left to tarfile.
_BLANKS = rb"[ \t\n\r\x0b\x0c]*"
_OCTAL = re.compile(_BLANKS + rb"([0-7]*)" + _BLANKS + rb"(?:\x00[\x00-\xff]*)?")
_SIZE, _CHECKSUM = (124, 136), (148, 156)
# The other number fields tarfile parses (and would refuse if garbled): mode, uid, gid, mtime, devmajor, devminor.
_OTHER_NUMBERS = ((100, 108), (108, 116), (116, 124), (136, 148), (329, 337), (337, 345))
_PLAIN_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE)


def plain_header(block: bytes, offset: int) -> tarfile.TarInfo | None:
    """The member whose header ``block`` was read at ``offset``, or None when tarfile must read it.

    The TarInfo holds what a walk needs (name, type, size, offset, offset_data), each equal to
    what ``tarfile`` would give; the zero block that ends an archive is the caller's to notice.
    """
    if len(block) != BLOCK:
        return None
    octal = _OCTAL.fullmatch
    checksum = octal(block, *_CHECKSUM)
    if checksum is None or int(checksum[1] or b"0", 8) != 256 + sum(block) - sum(block[148:156]):
        return None  # a bad or signed-byte checksum: tarfile decides
    kind = block[156:157]
    size = octal(block, *_SIZE)
    if kind not in _PLAIN_TYPES or size is None or any(octal(block, a, b) is None for a, b in _OTHER_NUMBERS):
        return None
    name = _text(block, 0, 100)
    if kind == tarfile.AREGTYPE and name.endswith("/"):
        kind = tarfile.DIRTYPE  # the old v7 way of marking a directory
    if kind == tarfile.DIRTYPE:
        name = name.rstrip("/")
    prefix = _text(block, 345, 500)
    if prefix:
        name = f"{prefix}/{name}".rstrip("/") if kind == tarfile.DIRTYPE else f"{prefix}/{name}"
    info = tarfile.TarInfo(name)
    info.type, info.size, info.offset, info.offset_data = kind, int(size[1] or b"0", 8), offset, offset + BLOCK
    return info


def next_header_offset(info: tarfile.TarInfo) -> int:
    """Where the header after a plain member lies: past its data for a file, right after it for a directory."""
    return info.offset_data + (-(-info.size // BLOCK) * BLOCK if info.isreg() else 0)


def _text(block: bytes, start: int, end: int) -> str:
    field = block[start:end]
    nul = field.find(b"\x00")
    return (field if nul < 0 else field[:nul]).decode(tarfile.ENCODING, "surrogateescape")
