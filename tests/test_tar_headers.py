"""Plain tar headers read directly must walk every archive exactly as tarfile does.

Archives are written by tarfile in each of its formats, then cut, wiped and mutated byte by
byte; each is walked twice, with direct header reading and with tarfile alone (the reader
answering "not plain" for every header), and the two walks must give the same members,
extents, bytes and errors, word for word.
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from thresher.sources import archive, tarheaders
from thresher.sources.archive import iter_tar
from thresher.sources.tarheaders import plain_header

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}


def build(fmt: int, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
                continue
            name, data = member
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_300_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def typed(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def photos(count: int, tag: str = "jpg/image") -> list[tuple[str, bytes]]:
    rng = random.Random(count)
    return [(f"{tag}_{i:05d}.jpg", rng.randbytes(rng.choice([0, 1, 511, 512, 513, 3000]))) for i in range(count)]


def headers(data: bytes) -> list[tarfile.TarInfo]:
    """The members tarfile reads from ``data`` (as far as it can: a damaged archive ends early)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def with_header(data: bytes, index: int, edit: dict[int, bytes], *, fix_checksum: bool = True) -> bytes:
    """``data`` with the ``index``-th header's bytes replaced at the given offsets (checksum recomputed)."""
    start = headers(data)[index].offset
    block = bytearray(data[start:start + 512])
    for at, value in edit.items():
        block[at:at + len(value)] = value
    if fix_checksum:
        block[148:156] = b" " * 8
        block[148:156] = b"%06o\x00 " % sum(block)
    return data[:start] + bytes(block) + data[start + 512:]


def v7_directory(data: bytes, index: int) -> bytes:
    """The header as old v7 tar wrote it: no magic, a directory as a file whose name ends in '/'."""
    start = headers(data)[index].offset
    name = data[start:start + 100].rstrip(b"\x00") + b"/"
    return with_header(data, index, {0: name.ljust(100, b"\x00"), 156: b"\x00", 257: bytes(8)})


def corpus() -> dict[str, bytes]:
    """Archives tarfile writes, plus the header variants other tools write or damage makes."""
    files = photos(6)
    long_name = "d" * 60 + "/" + "x" * 60 + ".jpg"  # ustar splits it into prefix + name; gnu and pax add a header
    deep = "a" * 90 + "/" + "b" * 90 + "/c.jpg"
    found: dict[str, bytes] = {}
    for label, fmt in FORMATS.items():
        found[f"{label}-plain"] = build(fmt, [typed("jpg", tarfile.DIRTYPE), *files])
        found[f"{label}-long"] = build(fmt, [(long_name, b"long"), (deep, b"deep"), *files[:2]])
        found[f"{label}-links"] = build(fmt, [*files[:2], typed("l", tarfile.SYMTYPE, "jpg/image_00000.jpg"),
                                              *files[2:]])
        found[f"{label}-hardlink"] = build(fmt, [*files[:1], typed("h", tarfile.LNKTYPE, "jpg/image_00000.jpg")])
        found[f"{label}-fifo"] = build(fmt, [*files[:1], typed("f", tarfile.FIFOTYPE)])
        found[f"{label}-unsafe"] = build(fmt, [*files[:1], ("../escape.jpg", b"x"), ("/abs.jpg", b"y")])
    found["pax-utf8"] = build(tarfile.PAX_FORMAT, [*files[:1], ("fleur_été.jpg", b"ete")])
    found["gnu-utf8"] = build(tarfile.GNU_FORMAT, [*files[:1], ("fleur_été.jpg", b"ete")])  # raw bytes, no pax
    big_uid = tarfile.TarInfo("uid.jpg")
    big_uid.uid = 8 ** 8  # too big for octal: GNU writes it base-256
    found["gnu-base256"] = build(tarfile.GNU_FORMAT, [*files[:1], big_uid, *files[1:2]])
    with_global = io.BytesIO()
    with tarfile.open(fileobj=with_global, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "global"}) as tar:
        for name, data in files[:3]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    found["pax-global"] = with_global.getvalue()
    plain = found["ustar-plain"]
    size = len(files[1][1])  # of member 2, the second photo: edits keep it, so the archive stays readable
    found["v7-directory"] = v7_directory(plain, 0)
    found["dir-with-size"] = with_header(plain, 0, {124: b"%011o\x00" % 1024})
    found["regular-as-aregtype"] = with_header(plain, 2, {156: b"\x00"})
    found["size-blanks"] = with_header(plain, 2, {124: b"  %08o \x00" % size})
    found["size-nul-then-junk"] = with_header(plain, 2, {124: b"%06o\x00junk!" % size})
    found["size-with-8"] = with_header(plain, 2, {124: b"00000000008\x00"})
    found["size-file-separator"] = with_header(plain, 2, {124: b"\x1c%010o\x00" % size})
    found["size-underscore"] = with_header(plain, 2, {124: b"0_%o\x00" % size})
    found["mode-garbled"] = with_header(plain, 3, {100: b"rw-r--r-"})
    found["mtime-negative"] = with_header(plain, 3, {136: b"-0000000001\x00"})
    found["devmajor-junk"] = with_header(plain, 3, {329: b"\xff\xff\xff\xff\xff\xff\xff\xff"})
    found["bad-checksum"] = with_header(plain, 3, {0: b"Z"}, fix_checksum=False)
    found["checksum-signed"] = _signed_checksum(with_header(plain, 3, {100: b"0000644\x00", 265: b"\xe9t\xe9"}), 3)
    found["prefix-in-gnu"] = with_header(found["gnu-plain"], 2, {345: b"atime-ish"})
    found["empty-prefix-nul"] = with_header(plain, 2, {345: b"\x00garbage"})
    found["wiped-first"] = bytes(512) + plain[512:]
    found["only-end"] = bytes(10240)
    return found


def _signed_checksum(data: bytes, index: int) -> bytes:
    """Store the header's checksum as the signed-byte sum (some old tars did), which tarfile accepts."""
    start = headers(data)[index].offset
    block = bytearray(data[start:start + 512])
    block[148:156] = b" " * 8
    signed = sum(b - 256 if b > 127 else b for b in block)
    block[148:156] = b"%06o\x00 " % signed
    return data[:start] + bytes(block) + data[start + 512:]


def damaged(data: bytes, rng: random.Random) -> list[bytes]:
    """Cuts at and around block boundaries, and headers with one byte changed."""
    cuts = sorted({*range(0, len(data), 512), *(rng.randrange(len(data)) for _ in range(6))})
    variants = [data[:cut] for cut in cuts]
    starts = [info.offset for info in headers(data)] if _readable(data) else []
    for start in starts:
        for _ in range(8):
            at = start + rng.randrange(512)
            variants.append(data[:at] + bytes([rng.randrange(256)]) + data[at + 1:])
    return variants


def _readable(data: bytes) -> bool:
    try:
        headers(data)
    except tarfile.TarError:
        return False
    return True


def walk(path: Path, *, read: bool) -> tuple[list[tuple], tuple[str, str] | None]:
    """What a walk gives: each member's name, size, extent and (if read) bytes, and how it ended."""
    seen: list[tuple] = []
    try:
        for member in iter_tar(path):
            extent = None if member.extent is None else (member.extent.offset, member.extent.size)
            try:
                data = member.read() if read else None
            except Exception as exc:  # noqa: BLE001 - compared, word for word
                data = (type(exc).__name__, str(exc))
            seen.append((member.name, member.size, extent, data))
    except Exception as exc:  # noqa: BLE001 - compared, word for word
        return seen, (type(exc).__name__, str(exc))
    return seen, None


def both_walks(path: Path, monkeypatch: pytest.MonkeyPatch, *, read: bool) -> tuple[tuple, tuple]:
    direct = walk(path, read=read)
    with monkeypatch.context() as patched:
        patched.setattr(archive, "plain_header", lambda block, offset: None)  # tarfile reads every header
        by_tarfile = walk(path, read=read)
    return direct, by_tarfile


@pytest.mark.parametrize("name", sorted(corpus()))
def test_every_variant_walks_as_tarfile_walks_it(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = corpus()[name]
    rng = random.Random(name)
    path = tmp_path / "archive.tar"
    for variant in [data, *damaged(data, rng)]:
        path.write_bytes(variant)
        for read in (False, True):
            direct, by_tarfile = both_walks(path, monkeypatch, read=read)
            assert direct == by_tarfile, (name, len(variant))


def test_plain_archives_are_walked_without_tarfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for label in ("ustar-plain", "gnu-plain", "pax-plain", "v7-directory", "gnu-utf8", "size-blanks", "size-nul-then-junk",
                  "regular-as-aregtype"):
        path = tmp_path / f"{label}.tar"
        path.write_bytes(corpus()[label])
        expected = walk(path, read=True)
        with monkeypatch.context() as patched:
            patched.setattr(archive.tarfile, "open", _no_tarfile)
            assert walk(path, read=True) == expected
        assert expected[1] is None and len(expected[0]) >= 2


def _no_tarfile(*args: object, **kwargs: object) -> None:
    raise AssertionError("tarfile was asked to read a plain archive")


def test_what_is_left_to_tarfile() -> None:
    data = corpus()
    first = {name: plain_header(data[name][:512], 0) for name in data}
    assert first["ustar-plain"] is not None and first["ustar-plain"].name == "jpg" and first["ustar-plain"].isdir()
    assert first["v7-directory"] is not None and first["v7-directory"].isdir()
    for left in ("pax-global", "dir-with-size", "wiped-first", "only-end"):
        assert first[left] is None or left == "dir-with-size", left
    long_header = data["ustar-long"][:512]
    parsed = plain_header(long_header, 0)
    assert parsed is not None and parsed.name == "d" * 60 + "/" + "x" * 60 + ".jpg"  # prefix + name
    assert plain_header(data["gnu-long"][:512], 0) is None  # a GNU long-name header: tarfile's
    assert plain_header(data["pax-long"][:512], 0) is None  # a pax extended header: tarfile's


def test_next_header_offset_skips_file_data_only() -> None:
    plain = corpus()["ustar-plain"]
    infos = headers(plain)
    for info, after in zip(infos, infos[1:], strict=False):
        parsed = plain_header(plain[info.offset:info.offset + 512], info.offset)
        assert parsed is not None
        assert (parsed.name, parsed.size, parsed.type, parsed.offset_data) == \
            (info.name, info.size, info.type, info.offset_data)
        assert tarheaders.next_header_offset(parsed) == after.offset


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs a tar command")
@pytest.mark.parametrize("fmt", ["gnu", "ustar", "posix", "v7", "oldgnu"])
def test_archives_the_tar_command_writes_walk_as_tarfile_walks_them(tmp_path: Path, fmt: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "tree"
    (tree / "jpg" / "deeper").mkdir(parents=True)
    rng = random.Random(fmt)
    for n, size in enumerate([0, 1, 511, 512, 513, 70_000]):
        (tree / "jpg" / f"image_{n:05d}.jpg").write_bytes(rng.randbytes(size))
    if fmt != "v7":  # v7 stores names of at most 99 bytes
        (tree / "jpg" / "deeper" / ("long_" + "n" * 90 + ".jpg")).write_bytes(b"long")  # past 100 with its path
    path = tmp_path / f"{fmt}.tar"
    subprocess.run(["tar", f"--format={fmt}", "-cf", str(path), "-C", str(tree), "jpg"], check=True)
    direct, by_tarfile = both_walks(path, monkeypatch, read=True)
    assert direct == by_tarfile and direct[1] is None
    assert len(direct[0]) == (6 if fmt == "v7" else 7)
    if fmt in ("ustar", "v7"):  # no long-name header (ustar: the long path fits its prefix field): all plain
        with monkeypatch.context() as patched:
            patched.setattr(archive.tarfile, "open", _no_tarfile)
            assert walk(path, read=True) == direct
