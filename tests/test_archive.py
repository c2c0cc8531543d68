"""Safe archive reading: normal tars in every compression, and hostile or broken ones refused."""

from __future__ import annotations

import gzip
import io
import os
import re
import stat
import struct
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pytest
from reliability_matrix import scenario

from thresher.errors import MalformedDataError, UnsafeArchiveError
from thresher.sources import members
from thresher.sources.archive import (
    DEFAULT_LIMITS,
    CorruptArchiveError,
    Limits,
    Member,
    describe_head,
    iter_tar,
    open_gzip,
    read_tar_members,
    safe_extract,
    sniff_compression,
    walking_each_tar_once,
)
from thresher.sources.members import Listing, iter_archive, iter_nested, members_in_order

MODES = {"tar": "w", "tar.gz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}
FILES = {
    "cifar-10-batches-bin/data_batch_1.bin": bytes(range(256)) * 40,
    "cifar-10-batches-bin/readme.html": b"<html>readme</html>",
    "cifar-10-batches-bin/empty.txt": b"",
}
HTML = b"<!DOCTYPE html>\n<html><head><title>Quota exceeded</title></head><body>Sorry</body></html>\n"


def entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tuple:
    return (name, data, kind, linkname)


def make_tar(path: Path, entries: Iterable[tuple] | dict[str, bytes], mode: str = "w") -> Path:
    if isinstance(entries, dict):
        entries = [entry(n, d) for n, d in entries.items()]
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tf:
        for name, data, kind, linkname in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = linkname
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


def names_archive_and_member(path: Path, member: str) -> str:
    return re.escape(str(path)) + r".*" + re.escape(member)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# -- normal archives -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", list(MODES))
def test_iterates_every_compression(tmp_path: Path, suffix: str) -> None:
    entries = [entry("cifar-10-batches-bin", kind=tarfile.DIRTYPE)] + [entry(n, d) for n, d in FILES.items()]
    path = make_tar(tmp_path / f"a.{suffix}", entries, MODES[suffix])
    expected_kind = {"tar": "tar", "tar.gz": "gzip", "tar.bz2": "bz2", "tar.xz": "xz"}[suffix]
    assert sniff_compression(path) == expected_kind
    seen = {}
    for member in iter_tar(path):
        assert member.size == len(FILES[member.name])
        seen[member.name] = member.read()
    assert seen == FILES
    assert read_tar_members(path, ["cifar-10-batches-bin/readme.html"]) == {
        "cifar-10-batches-bin/readme.html": FILES["cifar-10-batches-bin/readme.html"]
    }
    assert read_tar_members(path, lambda n: n.endswith(".bin")) == {
        "cifar-10-batches-bin/data_batch_1.bin": FILES["cifar-10-batches-bin/data_batch_1.bin"]
    }


def test_compression_comes_from_magic_not_name(tmp_path: Path) -> None:
    # 102flowers.tgz is an uncompressed tar; and a gzip named .tar must work too.
    flowers = make_tar(tmp_path / "102flowers.tgz", {"jpg/image_00001.jpg": b"\xff\xd8jpeg"}, "w")
    assert sniff_compression(flowers) == "tar"
    assert [(m.name, m.read()) for m in iter_tar(flowers)] == [("jpg/image_00001.jpg", b"\xff\xd8jpeg")]
    odd = make_tar(tmp_path / "plain.tar", FILES, "w:gz")
    assert sniff_compression(odd) == "gzip"
    assert {m.name for m in iter_tar(odd)} == set(FILES)


def test_names_are_normalised(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "n.tar", {"./an4//etc/./an4_train.fileids": b"x", "an4/wav/a.raw": b"yz"})
    assert [m.name for m in iter_tar(path)] == ["an4/etc/an4_train.fileids", "an4/wav/a.raw"]


def test_streaming_open_and_single_use(tmp_path: Path) -> None:
    big = os.urandom(300_000)
    path = make_tar(tmp_path / "s.tar.gz", {"big.bin": big, "small": b"s"}, "w:gz")
    members = []
    for member in iter_tar(path):
        if member.name == "big.bin":
            with member.open() as f:
                assert f.read(10) == big[:10]
                assert f.read() == big[10:]
            with pytest.raises(RuntimeError, match="already opened"):
                member.open()
        members.append(member)
    with pytest.raises(RuntimeError, match="moved on"):
        members[1].read()  # the iterator has moved past it


def test_read_refuses_members_too_big_for_memory_but_open_streams(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "r.tar", {"huge.bin": b"z" * 5000})
    for member in iter_tar(path, limits=Limits(max_read_size=1000)):
        with pytest.raises(UnsafeArchiveError, match=names_archive_and_member(path, "huge.bin") + ".*open"):
            member.read()
    for member in iter_tar(path, limits=Limits(max_read_size=1000)):
        with member.open() as f:
            assert sum(len(chunk) for chunk in iter(lambda f=f: f.read(700), b"")) == 5000


def test_read_tar_members_reports_missing(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "m.tar", FILES)
    with pytest.raises(MalformedDataError, match=r"m\.tar.*'cifar-10-batches-bin/test_batch.bin'"):
        read_tar_members(path, ["cifar-10-batches-bin/readme.html", "cifar-10-batches-bin/test_batch.bin"])


def test_member_from_bytes() -> None:
    member = Member.from_bytes("a/b.bin", b"abc")
    assert (member.name, member.size, member.read()) == ("a/b.bin", 3, b"abc")


def test_limits_from_expected() -> None:
    limits = Limits.from_expected(47_040_016, members=4)
    assert limits.max_total_size == limits.max_member_size == 470_400_160
    assert limits.max_members == 140
    assert limits.max_read_size == 470_400_160
    assert Limits.from_expected(10, factor=2.5).max_members == DEFAULT_LIMITS.max_members
    with pytest.raises(ValueError):
        Limits(max_members=-1)


# -- hostile archives ------------------------------------------------------------------------


HOSTILE = {
    "dotdot": ([entry("ok.txt", b"fine"), entry("../evil.txt", b"pwned")], "../evil.txt", "'..'"),
    "dotdot_inside": ([entry("a/../../evil.txt", b"pwned")], "a/../../evil.txt", "'..'"),
    "absolute": ([entry("/tmp/thresher-abs-evil.txt", b"pwned")], "/tmp/thresher-abs-evil.txt", "absolute"),
    "symlink": (
        [entry("link", kind=tarfile.SYMTYPE, linkname="../outside"), entry("link/pwned.txt", b"pwned")],
        "link",
        "symbolic link",
    ),
    "symlink_abs": (
        [entry("passwd", kind=tarfile.SYMTYPE, linkname="/etc/passwd")],
        "passwd",
        "symbolic link",
    ),
    "hardlink": ([entry("hard", kind=tarfile.LNKTYPE, linkname="../outside/x")], "hard", "hard link"),
    "chardev": ([entry("dev/null", kind=tarfile.CHRTYPE)], "dev/null", "character device"),
    "blockdev": ([entry("dev/sda", kind=tarfile.BLKTYPE)], "dev/sda", "block device"),
    "fifo": ([entry("pipe", kind=tarfile.FIFOTYPE)], "pipe", "FIFO"),
    "long_name": ([entry("d/" * 2500 + "x.bin", b"x")], "d/d/d/", "5005 characters"),
    "dotdot_dir": ([entry("../escape", kind=tarfile.DIRTYPE)], "../escape", "'..'"),
    "backslash": ([entry("..\\..\\evil.txt", b"x")], "evil.txt", "backslash"),
}


@pytest.mark.parametrize("suffix", ["tar", "tar.gz"])
@pytest.mark.parametrize("case", list(HOSTILE))
@scenario('12', 'hostile tar members: `../`, absolute paths, symlinks and hardlinks pointing outside, devices, FIFOs, absurd names, backslash paths',
          'refused with an error naming archive and member; nothing written outside the target',
          'UnsafeArchiveError matches archive, member and reason, for tar and tar.gz; extraction leaves nothing outside the target and no links')
def test_hostile_members_are_refused(tmp_path: Path, case: str, suffix: str) -> None:
    entries, member, problem = HOSTILE[case]
    path = make_tar(tmp_path / f"{case}.{suffix}", entries, MODES[suffix])
    pattern = names_archive_and_member(path, member) + ".*" + re.escape(problem)
    with pytest.raises(UnsafeArchiveError, match=pattern):
        for m in iter_tar(path):
            m.read()
    # and extraction writes nothing outside its target
    (tmp_path / "outside").mkdir()
    before = files_under(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=pattern):
        safe_extract(path, tmp_path / "target")
    new = files_under(tmp_path) - before
    assert all(p == "target" or p.startswith("target/") for p in new), new
    assert not list((tmp_path / "outside").iterdir())
    assert not Path("/tmp/thresher-abs-evil.txt").exists()
    assert not any(p.is_symlink() for p in (tmp_path / "target").rglob("*"))


@scenario('12', 'a tar with more members than the limit',
          'refused',
          'UnsafeArchiveError past `max_members`')
def test_too_many_members(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "many.tar.gz", {f"f{i:03d}": b"x" for i in range(20)}, "w:gz")
    assert len(list(iter_tar(path, limits=Limits(max_members=20)))) == 20
    with pytest.raises(
        UnsafeArchiveError, match=names_archive_and_member(path, "f010") + ".*more than 10 members"
    ):
        for _ in iter_tar(path, limits=Limits(max_members=10)):
            pass


@scenario('12', 'a gzip bomb (a member expanding far beyond its declared size)',
          'reading stops at the limit',
          'UnsafeArchiveError naming the member')
def test_gzip_bomb_member_over_size_limit(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "bomb.tar.gz", {"zeros.bin": bytes(5 << 20)}, "w:gz")
    assert path.stat().st_size < 100_000
    with pytest.raises(
        UnsafeArchiveError, match=names_archive_and_member(path, "zeros.bin") + ".*5242880 bytes"
    ):
        for _ in iter_tar(path, limits=Limits(max_member_size=1 << 20)):
            pass


def test_total_size_limit(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "total.tar.bz2", {f"part{i}": bytes(1000) for i in range(3)}, "w:bz2")
    with pytest.raises(UnsafeArchiveError, match=names_archive_and_member(path, "part2") + ".*total 3000"):
        for m in iter_tar(path, limits=Limits(max_total_size=2500)):
            m.read()


@scenario('12', 'an archive whose compression ratio is absurd',
          'refused',
          'UnsafeArchiveError over `max_ratio`')
def test_compression_ratio_limit(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "ratio.tar.xz", {"zeros.bin": bytes(8 << 20)}, "w:xz")
    with pytest.raises(UnsafeArchiveError, match=names_archive_and_member(path, "zeros.bin") + ".*max_ratio"):
        for m in iter_tar(path, limits=Limits(max_ratio=50)):
            m.read()
    assert [m.size for m in iter_tar(path)] == [8 << 20]  # no ratio limit by default


@scenario('12', 'a huge pax/long-name header',
          'refused instead of loaded into memory',
          'UnsafeArchiveError')
def test_pax_header_bomb(tmp_path: Path) -> None:
    path = tmp_path / "pax.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(tarfile.TarInfo("first.txt"))
        info = tarfile.TarInfo("second.txt")
        info.pax_headers = {"comment": "x" * (12 << 20)}
        tf.addfile(info)
    with pytest.raises(UnsafeArchiveError, match=names_archive_and_member(path, "first.txt") + ".*header"):
        for _ in iter_tar(path):
            pass


def test_safe_extract_writes_files_without_following_links(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "ok.tar.gz", {**FILES, "top.txt": b"top"}, "w:gz")
    target = tmp_path / "target"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_bytes(b"original")
    target.mkdir()
    (target / "top.txt").symlink_to(outside / "victim.txt")  # a leftover link in the target
    written = safe_extract(path, target)
    assert sorted(p.relative_to(target.resolve()).as_posix() for p in written) == sorted([*FILES, "top.txt"])
    for name, data in FILES.items():
        assert (target / name).read_bytes() == data
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o644
    assert not (target / "top.txt").is_symlink() and (target / "top.txt").read_bytes() == b"top"
    assert (outside / "victim.txt").read_bytes() == b"original"
    assert not [p for p in target.rglob("*") if p.name.endswith(".part")]


def test_safe_extract_refuses_symlinked_directory_in_target(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "d.tar", {"sub/file.txt": b"x"})
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(
        UnsafeArchiveError, match=names_archive_and_member(path, "sub/file.txt") + ".*symlink"
    ):
        safe_extract(path, target)
    assert not list(outside.iterdir())


# -- broken and wrong files ------------------------------------------------------------------


def big_tar(tmp_path: Path, suffix: str) -> tuple[Path, bytes]:
    payload = os.urandom(200_000)
    path = make_tar(
        tmp_path / f"big.{suffix}", {"a/first.bin": payload, "a/second.bin": payload}, MODES[suffix]
    )
    return path, path.read_bytes()


def consume(path: Path, read: bool = True) -> None:
    for member in iter_tar(path):
        if read:
            member.read()


@pytest.mark.parametrize("suffix", list(MODES))
@pytest.mark.parametrize("read", [True, False])
@scenario('13', 'a truncated archive (tar, gz, bz2, xz)',
          'a clear error naming the archive, never a raw EOFError/ReadError',
          'CorruptArchiveError naming the archive')
def test_truncated_archive_is_a_clear_error(tmp_path: Path, suffix: str, read: bool) -> None:
    path, data = big_tar(tmp_path, suffix)
    # Cutting an uncompressed tar's trailing zero padding loses nothing, so only compressed
    # archives are cut at the very end (their checksum trailer must still be verified).
    cuts = [len(data) // 3, len(data) // 2] + ([len(data) - 5] if suffix != "tar" else [])
    for cut in cuts:
        path.write_bytes(data[:cut])
        with pytest.raises(CorruptArchiveError, match=re.escape(str(path))) as info:
            consume(path, read)
        assert isinstance(info.value, MalformedDataError)


def test_compressed_trailer_is_verified_after_tar_end(tmp_path: Path) -> None:
    # Zero padding after the end-of-archive marker is legal; the gzip CRC after it must still
    # be read, or a download missing its last bytes would pass.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("a.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    data = gzip.compress(buf.getvalue() + bytes(3 << 20))
    path = tmp_path / "padded.tar.gz"
    path.write_bytes(data)
    assert [m.read() for m in iter_tar(path)] == [b"abc"]
    path.write_bytes(data[:-5])
    with pytest.raises(CorruptArchiveError, match=r"padded\.tar\.gz.*gzip data is truncated"):
        consume(path)


def test_tar_without_end_marker_or_with_bad_header(tmp_path: Path) -> None:
    path, data = big_tar(tmp_path, "tar")
    header_start = data.index(b"a/second.bin")  # the name field opens the second header block
    assert header_start % 512 == 0
    path.write_bytes(data[:header_start])
    with pytest.raises(CorruptArchiveError, match=r"big\.tar.*after member 'a/first.bin'.*end-of-archive"):
        consume(path)
    broken = bytearray(data)
    broken[header_start : header_start + 512] = b"\x01" * 512
    path.write_bytes(bytes(broken))
    with pytest.raises(CorruptArchiveError, match=r"big\.tar.*invalid tar header"):
        consume(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(HTML, "HTML page"), (b"", "is empty"), (b"Just some text, not a tar\n" * 30, "looks like text")],
)
def test_not_a_tar(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "cifar-10-binary.tar.gz"
    path.write_bytes(content)
    with pytest.raises(MalformedDataError, match=re.escape(str(path)) + ".*" + problem):
        consume(path)


def test_gzip_of_non_tar_and_zip(tmp_path: Path) -> None:
    path = tmp_path / "x.tar.gz"
    path.write_bytes(gzip.compress(HTML * 20))
    with pytest.raises(MalformedDataError, match=r"x\.tar\.gz.*not a readable tar"):
        consume(path)
    zpath = tmp_path / "y.tar"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("a.txt", "a")
    with pytest.raises(MalformedDataError, match=r"y\.tar.*zip archive"):
        consume(zpath)


# -- single gzip files -----------------------------------------------------------------------


def test_open_gzip(tmp_path: Path) -> None:
    data = b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + bytes(range(10))
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(data))
    with open_gzip(path, limit=len(data)) as f:
        assert f.read(4) == data[:4] and f.read() == data[4:]
    with open_gzip(path, limit=None) as f:
        assert f.read() == data
    with (
        pytest.raises(UnsafeArchiveError, match=re.escape(str(path)) + ".*more than 17 bytes"),
        open_gzip(path, limit=17) as f,
    ):
        f.read()


@scenario('12', 'a single-file gzip bomb (e.g. an IDX .gz)',
          'stops at the limit',
          'UnsafeArchiveError at limit+1 bytes')
def test_open_gzip_bomb(tmp_path: Path) -> None:
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(bytes(4 << 20)))
    with pytest.raises(UnsafeArchiveError, match=r"bomb\.gz.*gzip bomb"), open_gzip(path, limit=1 << 20) as f:
        while f.read(1 << 16):
            pass


def test_open_gzip_on_html_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(HTML)
    with pytest.raises(
        MalformedDataError, match=r"train-images-idx3-ubyte\.gz \(byte 0\): expected a gzip.*HTML"
    ):
        open_gzip(path, limit=None)
    path.write_bytes(gzip.compress(os.urandom(100_000))[:50_000])
    with (
        pytest.raises(CorruptArchiveError, match=r"train-images-idx3-ubyte\.gz.*truncated or corrupt"),
        open_gzip(path, limit=None) as f,
    ):
        f.read()


# -- sniffing --------------------------------------------------------------------------------


def v7_header() -> bytes:
    block = bytearray(tarfile.TarInfo("old.txt").tobuf(format=tarfile.USTAR_FORMAT)[:512])
    block[257:265] = bytes(8)  # no ustar magic, as in pre-POSIX tars
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (gzip.compress(b"x"), "gzip"),
        (b"BZh91AY&SY", "bz2"),
        (b"\xfd7zXZ\x00\x00", "xz"),
        (b"PK\x03\x04rest", "zip"),
        (b"(\xb5/\xfd", "zstd"),
        (v7_header(), "tar"),
        (bytes(1024), "tar"),
        (HTML, "none"),
        (b"", "none"),
        (b"\x00" * 100, "none"),
    ],
)
def test_sniff_compression(head: bytes, kind: str) -> None:
    assert sniff_compression(head) == kind


def test_describe_head() -> None:
    assert "HTML" in describe_head(b"  \n<html><body>")
    assert describe_head(b"\x1f\x8b\x08") == "is gzip data"
    assert "bytes 00 01 02" in describe_head(bytes(range(40)))


def test_gzip_stream_follows_members_and_ignores_zero_padding(tmp_path: Path) -> None:
    """Concatenated gzip members are one stream (as gzip(1) writes them); zero padding after the
    last member is ignored; anything else after it is an error naming the archive."""
    import gzip as gz

    payload = os.urandom(3 << 20)  # several 1 MiB inflate blocks
    tar_bytes = make_tar(tmp_path / "inner.tar", {"a.bin": payload, "b.txt": b"hello"}, "w").read_bytes()
    half = len(tar_bytes) // 2
    joined = tmp_path / "joined.tar.gz"
    joined.write_bytes(gz.compress(tar_bytes[:half], mtime=0) + gz.compress(tar_bytes[half:], mtime=0) + b"\0" * 700)
    assert {m.name: m.read() for m in iter_tar(joined)} == {"a.bin": payload, "b.txt": b"hello"}
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(gz.compress(tar_bytes, mtime=0) + b"not gzip at all")
    with pytest.raises(MalformedDataError, match="garbage.tar.gz"):
        for m in iter_tar(garbage):
            m.read()


# -- extents: members of uncompressed tars read later, by any process ---------------------------


def test_uncompressed_members_have_extents_readable_after_the_iterator_moved_on(tmp_path: Path) -> None:
    members = {"a.bin": os.urandom(700), "dir/b.bin": b"", "c.bin": os.urandom(3000)}
    path = make_tar(tmp_path / "plain.tar", members)
    extents = {m.name: m.extent for m in iter_tar(path)}
    assert all(e is not None for e in extents.values())
    assert {name: e.read() for name, e in extents.items() if e is not None} == members
    assert extents["c.bin"] is not None and extents["c.bin"].read(5) == members["c.bin"][:5]


def test_compressed_and_oversized_members_have_no_extent(tmp_path: Path) -> None:
    members = {"a.bin": b"x" * 100, "big.bin": b"y" * 5000}
    assert all(m.extent is None for m in iter_tar(make_tar(tmp_path / "z.tar.gz", members, "w:gz")))
    small = Limits(max_read_size=1000)
    assert {m.name: m.extent is None for m in iter_tar(make_tar(tmp_path / "p.tar", members), limits=small)} == \
        {"a.bin": False, "big.bin": True}


def test_extent_of_a_replaced_or_truncated_archive_is_refused(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "plain.tar", {"a.bin": b"a" * 2000})
    (extent,) = [m.extent for m in iter_tar(path)]
    assert extent is not None
    replacement = make_tar(tmp_path / "other.tar", {"a.bin": b"b" * 2000})
    os.replace(replacement, path)  # a re-download renamed over it
    with pytest.raises(CorruptArchiveError, match="replaced"):
        extent.read()
    (extent,) = [m.extent for m in iter_tar(path)]
    assert extent is not None and extent.read(10) == b"b" * 10  # the file is open from here on
    os.truncate(path, extent.offset + 100)
    with pytest.raises(CorruptArchiveError, match=r"plain\.tar.*'a\.bin'.*ends 1900 bytes before"):
        extent.read()


def zero_first_header_keeping_mtime(path: Path) -> None:
    """A change the index cannot see: same file, size and modification time."""
    before = os.stat(path)
    with open(path, "r+b") as f:
        f.write(b"\0" * 512)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_inside_walking_each_tar_once_a_finished_walk_is_reused(tmp_path: Path) -> None:
    members = {"a.bin": b"a" * 700, "b.bin": b"b" * 3000}
    path = make_tar(tmp_path / "plain.tar", members)
    with walking_each_tar_once():
        first = [(m.name, m.read()) for m in iter_tar(path)]
        zero_first_header_keeping_mtime(path)
        again = [(m.name, m.read()) for m in iter_tar(path)]  # from the index, not the headers
    assert first == again == list(members.items())
    with pytest.raises(CorruptArchiveError):  # outside, every call walks and checks the archive
        list(iter_tar(path))


def test_an_unfinished_or_compressed_walk_is_not_remembered(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "plain.tar", {"a.bin": b"a", "b.bin": b"b" * 50_000})
    with walking_each_tar_once():
        next(iter(iter_tar(path)))  # left far from the end
        zero_first_header_keeping_mtime(path)
        with pytest.raises(CorruptArchiveError):
            list(iter_tar(path))
    packed = make_tar(tmp_path / "packed.tar.gz", {"a.bin": b"a"}, "w:gz")
    with walking_each_tar_once():
        assert [m.read() for m in iter_tar(packed)] == [b"a"]
        packed.write_bytes(packed.read_bytes()[:20])
        with pytest.raises(CorruptArchiveError):
            list(iter_tar(packed))



def test_a_walk_left_near_the_end_is_completed_and_remembered(tmp_path: Path) -> None:
    """A split's walk ends at its last wanted member; the next split's walk should not read headers again."""
    members = {f"{i:03}.bin": bytes([i]) * 5000 for i in range(40)}
    path = make_tar(tmp_path / "plain.tar", members)
    with walking_each_tar_once():
        for member in iter_tar(path):  # stops at the last member but one, as members_in_order does
            if member.name == "038.bin":
                break
        zero_first_header_keeping_mtime(path)
        assert [(m.name, m.read()) for m in iter_tar(path)] == list(members.items())  # from the index
    path = make_tar(tmp_path / "early.tar", members)
    with walking_each_tar_once():
        for member in iter_tar(path):
            if member.name == "030.bin":  # three quarters in: not worth completing
                break
        zero_first_header_keeping_mtime(path)
        with pytest.raises(CorruptArchiveError):
            list(iter_tar(path))

# -- zip ------------------------------------------------------------------------------------------


def make_zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED,
             modes: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = method
            info.external_attr = (modes or {}).get(name, stat.S_IFREG | 0o644) << 16
            zf.writestr(info, data)
    return path


def patch_central(path: Path, member: str, **fields: int) -> None:
    """Rewrite fields of a member's central directory entry (and flags/method in its local header)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")
    while data[at + 46:at + 46 + len(member)] != member.encode():
        at = data.index(b"PK\x01\x02", at + 4)
    offsets = {"flags": (8, "<H"), "method": (10, "<H"), "crc": (16, "<I"), "file_size": (24, "<I")}
    local = int.from_bytes(data[at + 42:at + 46], "little")
    for name, value in fields.items():
        offset, fmt = offsets[name]
        data[at + offset:at + offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
        if name in ("flags", "method"):
            data[local + offset - 2:local + offset] = struct.pack(fmt, value)
    path.write_bytes(bytes(data))


def test_zip_members_in_directory_order_with_extents_for_stored(tmp_path: Path) -> None:
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        path = make_zip(tmp_path / f"m{method}.zip", {"img/b.jpg": b"B" * 3000, "a.txt": b"hello", "img/": b""},
                        method)
        members = list(iter_archive(path))
        assert [(m.name, m.size) for m in members] == [("img/b.jpg", 3000), ("a.txt", 5)]
        got = {m.name: m.read() for m in iter_archive(path)}
        assert got == {"img/b.jpg": b"B" * 3000, "a.txt": b"hello"}
        has_extent = [m.extent is not None for m in members]
        assert has_extent == [method == zipfile.ZIP_STORED] * 2
        if method == zipfile.ZIP_STORED:
            assert members[0].extent.read() == b"B" * 3000  # readable after the walk ended


ZIP_HOSTILE = {
    "dotdot": ({"../evil.txt": b"x"}, None, "../evil.txt", "escape"),
    "absolute": ({"/tmp/thresher-abs-evil.txt": b"x"}, None, "/tmp/thresher-abs-evil.txt", "absolute path"),
    "backslash": ({"..\\..\\evil.txt": b"x"}, None, "evil.txt", "backslash"),
    "symlink": ({"link": b"/etc/passwd"}, {"link": stat.S_IFLNK | 0o777}, "link", "symbolic link"),
    "fifo": ({"pipe": b""}, {"pipe": stat.S_IFIFO | 0o644}, "pipe", "FIFO"),
    "long": ({"x" * 5000: b"x"}, None, "xxxx", "over the limit"),
}


@pytest.mark.parametrize("case", list(ZIP_HOSTILE))
@scenario('12', 'hostile zip members: `../`, absolute paths, backslashes, symlinks and FIFOs (Unix mode bits), absurd names',
          'refused with an error naming archive and member, before any byte of it is read',
          'UnsafeArchiveError matches archive, member and reason (zips written with zipfile)')
def test_hostile_zip_members_are_refused(tmp_path: Path, case: str) -> None:
    members, modes, shown, problem = ZIP_HOSTILE[case]
    path = make_zip(tmp_path / f"{case}.zip", {"ok.txt": b"fine", **members}, modes=modes)
    with pytest.raises(UnsafeArchiveError, match=names_archive_and_member(path, shown) + ".*" + re.escape(problem)):
        for m in iter_archive(path):
            m.read()


@scenario('12', 'a zip with more members, or larger ones, than the limits (sizes from its directory)',
          'refused before reading',
          'UnsafeArchiveError past `max_members`, `max_member_size`, `max_total_size`, `max_ratio`')
def test_zip_limits_are_checked_from_the_directory(tmp_path: Path) -> None:
    many = make_zip(tmp_path / "many.zip", {f"f{i:03d}": b"x" for i in range(20)})
    with pytest.raises(UnsafeArchiveError, match=names_archive_and_member(many, "f010") + ".*more than 10 members"):
        next(iter_archive(many, limits=Limits(max_members=10)))
    bomb = make_zip(tmp_path / "bomb.zip", {"zeros.bin": bytes(8 << 20)})
    assert bomb.stat().st_size < 100_000
    for limits, problem in [(Limits(max_member_size=1 << 20), "member size limit"),
                            (Limits(max_total_size=1 << 20), "total"),
                            (Limits(max_ratio=50), "max_ratio")]:
        with pytest.raises(UnsafeArchiveError, match=names_archive_and_member(bomb, "zeros.bin") + ".*" + problem):
            next(iter_archive(bomb, limits=limits))


@scenario('12', 'a zip bomb of overlapping entries (many directory entries sharing one compressed block)',
          'refused before anything is inflated',
          'UnsafeArchiveError names the overlapping member')
def test_overlapping_zip_entries_are_refused(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "overlap.zip", {"a.bin": bytes(1 << 20)})
    data = path.read_bytes()
    start, end = data.index(b"PK\x01\x02"), data.index(b"PK\x05\x06")
    entry_ = data[start:end]
    copy = entry_.replace(b"a.bin", b"b.bin")  # the same local header offset, another name
    directory = entry_ + copy
    record = bytearray(data[end:])
    struct.pack_into("<HHII", record, 8, 2, 2, len(directory), start)
    path.write_bytes(data[:start] + directory + bytes(record))
    assert [i.filename for i in zipfile.ZipFile(path).infolist()] == ["a.bin", "b.bin"]  # zipfile lists both
    with pytest.raises(UnsafeArchiveError, match=names_archive_and_member(path, "b.bin") + ".*overlaps.*a.bin"):
        next(iter_archive(path))


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("claimed", [500, 2000])
@scenario('13', 'a zip whose directory lies about a member\'s size',
          'reading the member fails clearly',
          'CorruptArchiveError names archive and member (size or CRC-32), never a zipfile traceback')
def test_zip_directory_lying_about_size(tmp_path: Path, method: int, claimed: int) -> None:
    path = make_zip(tmp_path / "lies.zip", {"a.bin": bytes(range(250)) * 4, "b.txt": b"ok"}, method)
    patch_central(path, "a.bin", file_size=claimed)
    with pytest.raises(CorruptArchiveError, match=names_archive_and_member(path, "a.bin")):
        for m in iter_archive(path):
            m.read()


@scenario('13', 'an encrypted zip member, or one compressed with a method zipfile cannot decode',
          'refused clearly, naming the method',
          'MalformedDataError names archive, member and "encrypted" or the method (e.g. 9, deflate64)')
def test_encrypted_and_unsupported_zip_members(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "enc.zip", {"a.txt": b"secret"})
    patch_central(path, "a.txt", flags=0x1)
    with pytest.raises(MalformedDataError, match=names_archive_and_member(path, "a.txt") + ".*encrypted"):
        next(iter_archive(path))
    path = make_zip(tmp_path / "d64.zip", {"a.txt": b"data"})
    patch_central(path, "a.txt", method=9)
    with pytest.raises(MalformedDataError, match=names_archive_and_member(path, "a.txt") + ".*method 9 .deflate64"):
        next(iter_archive(path))


def test_truncated_zip_and_not_an_archive(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "t.zip", {"a.txt": b"x" * 1000})
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(CorruptArchiveError, match=re.escape(str(path)) + r".*central directory.*truncated"):
        next(iter_archive(path))
    html = tmp_path / "page.zip"
    html.write_bytes(HTML)
    with pytest.raises(MalformedDataError, match=re.escape(str(html)) + ".*HTML page"):
        next(iter_archive(html))


# -- archives inside archives ----------------------------------------------------------------------


@pytest.mark.parametrize("outer", ["tar", "tar.gz"])
@pytest.mark.parametrize("inner", ["w", "w:gz", "zip"])
def test_archive_inside_an_archive(tmp_path: Path, outer: str, inner: str) -> None:
    # ImageNet's train tar: one tar per class; here also a gzip'd inner tar and a zip member.
    classes = {f"n0{k}": {f"n0{k}_{i}.JPEG": bytes([k, i]) * 100 for i in range(3)} for k in range(2)}
    members: dict[str, bytes] = {}
    for wnid, files in classes.items():
        if inner == "zip":
            make_zip(tmp_path / "inner.zip", files)
            members[f"{wnid}.zip"] = (tmp_path / "inner.zip").read_bytes()
        else:
            members[f"{wnid}.tar"] = make_tar(tmp_path / "inner.tar", files, inner).read_bytes()
    path = make_tar(tmp_path / f"train.{outer}", members, MODES[outer])
    got = {}
    for member in iter_archive(path):
        for image in iter_nested(member):
            got[(member.name, image.name)] = image.read()
    suffix = "zip" if inner == "zip" else "tar"
    assert got == {(f"{w}.{suffix}", n): d for w, files in classes.items() for n, d in files.items()}


@pytest.mark.parametrize("outer", ["tar", "tar.gz", "zip"])
@pytest.mark.parametrize("inner", ["tar", "zip"])
@scenario('12', 'a hostile member inside an archive nested in another (tar in tar, zip in zip, either way)',
          'refused like a top-level one, naming both levels',
          'UnsafeArchiveError names `outer:inner` and the member')
def test_hostile_member_of_a_nested_archive(tmp_path: Path, outer: str, inner: str) -> None:
    if inner == "tar":
        inner_bytes = make_tar(tmp_path / "in.tar", [entry("ok.JPEG", b"x"), entry("../../evil.txt", b"x")]).read_bytes()
    else:
        inner_bytes = make_zip(tmp_path / "in.zip", {"ok.JPEG": b"x", "/etc/evil.txt": b"x"}).read_bytes()
    name = f"n01.{inner}"
    if outer == "zip":
        path = make_zip(tmp_path / "outer.zip", {"readme.txt": b"r", name: inner_bytes})
    else:
        path = make_tar(tmp_path / f"outer.{outer}", {"readme.txt": b"r", name: inner_bytes}, MODES[outer])
    evil = "../../evil.txt" if inner == "tar" else "/etc/evil.txt"
    pattern = re.escape(f"{path}:{name}: member {evil!r}")
    with pytest.raises(UnsafeArchiveError, match=pattern):
        for member in iter_archive(path):
            if member.name == name:
                for m in iter_nested(member):
                    m.read()


def test_iter_archive_reads_streams(tmp_path: Path) -> None:
    data = make_tar(tmp_path / "x.tar.bz2", {"a.txt": b"A", "b.txt": b"B"}, "w:bz2").read_bytes()
    assert [(m.name, m.read()) for m in iter_archive(io.BytesIO(data), label="x.tar.bz2")] == \
        [("a.txt", b"A"), ("b.txt", b"B")]
    with pytest.raises(MalformedDataError, match=r"^in\.bin \(byte 0\).*looks like text"):
        next(iter_archive(io.BytesIO(b"just text, no archive\n" * 30), label="in.bin"))


# -- members in a listed order -------------------------------------------------------------------

LISTED = {f"img/{i}.jpg": bytes([i]) * (100 + i) for i in range(6)}


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "zip"])
def test_members_in_order_follows_the_list_not_the_archive(tmp_path: Path, kind: str) -> None:
    if kind == "zip":
        path = make_zip(tmp_path / "a.zip", LISTED, zipfile.ZIP_STORED)
    else:
        path = make_tar(tmp_path / f"a.{kind}", LISTED, MODES[kind])
    wanted = ["img/4.jpg", "img/0.jpg", "img/4.jpg", "img/5.jpg", "img/2.jpg", "img/0.jpg"]  # with repeats
    got = [(m.name, m.read(), m.extent) for m in members_in_order(path, wanted)]
    assert [(name, data) for name, data, _ in got] == [(n, LISTED[n]) for n in wanted]
    if kind != "tar.gz":  # held by where they lie, not by their bytes
        assert all(extent is not None for _, _, extent in got)


def test_members_in_order_yields_the_due_member_live_and_holds_only_early_ones(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "a.tar.gz", LISTED, "w:gz")
    found = members_in_order(path, ["img/0.jpg", "img/1.jpg", "img/3.jpg", "img/2.jpg"])
    first = next(found)
    with first.open() as stream:  # live: a stream over the walk, not a copy
        assert stream.read() == LISTED["img/0.jpg"]
    assert [m.read() for m in found] == [LISTED[n] for n in ("img/1.jpg", "img/3.jpg", "img/2.jpg")]


@scenario('13', 'a member a recipe lists is missing from its archive',
          'an error naming archive and member (or, where a recipe allows it, a bad record in its place)',
          'MalformedDataError names the archive and the member; with allow_missing, None in its place and the rest in order')
def test_members_in_order_missing_member(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "a.tar", LISTED)
    with pytest.raises(MalformedDataError, match=names_archive_and_member(path, "img/9.jpg") + ".*missing"):
        list(members_in_order(path, ["img/1.jpg", "img/9.jpg", "img/2.jpg"]))
    got = list(members_in_order(path, ["img/1.jpg", "img/9.jpg", "img/2.jpg"], allow_missing=True))
    assert [m and m.name for m in got] == ["img/1.jpg", None, "img/2.jpg"]


def test_members_in_order_with_a_listing_inside_the_archive(tmp_path: Path) -> None:
    # The list comes after what it lists (AN4's etc/ files may): held until it is read.
    files = {**LISTED, "etc/list.txt": b"img/5.jpg\nimg/1.jpg\nimg/9.jpg\n"}
    path = make_tar(tmp_path / "a.tar.gz", files, "w:gz")

    def order(lists: dict[str, bytes]) -> list[str]:
        return lists["etc/list.txt"].decode().split()

    listing = Listing(("etc/list.txt",), order, lambda name: name.startswith("img/"))
    got = list(members_in_order(path, listing, allow_missing=True))
    assert [m and m.read() for m in got] == [LISTED["img/5.jpg"], LISTED["img/1.jpg"], None]
    with pytest.raises(MalformedDataError, match=names_archive_and_member(path, "etc/other.txt") + ".*missing"):
        list(members_in_order(path, Listing(("etc/other.txt",), order, lambda name: True)))


def test_members_kept_for_later_live_only_within_one_prepare(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_tar(tmp_path / "a.tar.gz", LISTED, "w:gz")
    walks = []
    monkeypatch.setattr(members, "iter_archive", lambda p, **kw: walks.append(p) or iter_archive(p, **kw))
    with walking_each_tar_once():
        assert [m.read() for m in members_in_order(path, ["img/0.jpg"], keep_for_later=["img/4.jpg"])] == \
            [LISTED["img/0.jpg"]]
        assert [m.read() for m in members_in_order(path, ["img/4.jpg"])] == [LISTED["img/4.jpg"]]
        assert len(walks) == 1  # the second call was served from what the first kept
    assert [m.read() for m in members_in_order(path, ["img/0.jpg"], keep_for_later=["img/4.jpg"])] == \
        [LISTED["img/0.jpg"]]
    assert [m.read() for m in members_in_order(path, ["img/4.jpg"])] == [LISTED["img/4.jpg"]]
    assert len(walks) == 3  # outside a prepare nothing is kept


def test_members_held_past_the_memory_budget_wait_on_disk(tmp_path: Path) -> None:
    """A list in the reverse of a gzip stream's order held the whole archive in memory."""
    import tracemalloc

    member_bytes, count, budget = 1 << 20, 48, 4 << 20
    entries = {f"img/{i:02}.jpg": os.urandom(member_bytes) for i in range(count)}
    path = make_tar(tmp_path / "photos.tar.gz", entries, "w:gz")

    def peak_reading(wanted: list[str]) -> int:
        tracemalloc.start()
        try:
            got = [(m.name, m.read() == entries[m.name]) for m in members_in_order(path, wanted, memory_budget=budget)]
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert got == [(name, True) for name in wanted]

    in_order = peak_reading(sorted(entries))  # nothing held: the walk's own buffers (read-ahead, inflate)
    reversed_peak = peak_reading(sorted(entries, reverse=True))  # all but the last held until it comes
    # The walk's read-ahead holds a varying few MiB: the margin is wide, and still far below count * member_bytes.
    assert reversed_peak < in_order + budget + 12 * member_bytes
    assert not [p for p in tmp_path.iterdir() if p.name != "photos.tar.gz"]  # the spill file was never visible


def _unlinked_open_files() -> set[Path]:
    """Files this process has open that have no name (O_TMPFILE or unlinked): only /proc shows them."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the descriptor listdir itself used
            continue
        if link.endswith(" (deleted)"):
            found.add(Path(link.removesuffix(" (deleted)")))
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see unlinked files")
@pytest.mark.parametrize("usable", [True, False])
def test_held_members_spill_beside_the_archive_else_to_the_system_temp(tmp_path: Path, usable: bool) -> None:
    import tempfile

    from thresher.sources.held import HeldMembers

    directory = tmp_path / "downloads"
    if usable:
        directory.mkdir()  # else it is gone (moved, or never made): the spill must still work
    data = {f"img/{i}.jpg": os.urandom(1000 + i) for i in range(3)}
    before = _unlinked_open_files()
    held = HeldMembers("photos.tar.gz", directory, budget=0)  # nothing fits in memory
    kept = [held.keep(Member.from_bytes(name, value)) for name, value in data.items()]
    spilled = _unlinked_open_files() - before
    assert [p.parent for p in spilled] == [directory if usable else Path(tempfile.gettempdir())]
    assert [(m.name, m.read()) for m in reversed(kept)] == list(reversed(data.items()))
    if usable:
        assert not list(directory.iterdir())  # unlinked from the start
