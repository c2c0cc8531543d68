"""Tars inside a tar, walked where they lie: members' extents in the outer file, nothing read outside."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from thresher.errors import CorruptArchiveError, MalformedDataError
from thresher.sources.archive import iter_tar, iter_tar_at


def tar_bytes(members: dict[str, bytes], *, end: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    return data if end else data[: data.rindex(next(reversed(members.values()))) + 512]


def inner_members(n: int, size: int, tag: str) -> dict[str, bytes]:
    return {f"{tag}_{i}.JPEG": bytes([i % 251]) * (size + i) for i in range(n)}


@pytest.fixture
def outer(tmp_path: Path) -> tuple[Path, dict[str, dict[str, bytes]]]:
    classes = {f"n0{k}.tar": inner_members(5, 3000 * (k + 1), f"n0{k}") for k in range(3)}
    path = tmp_path / "train.tar"
    path.write_bytes(tar_bytes({name: tar_bytes(members) for name, members in classes.items()}))
    return path, classes


def test_members_of_each_inner_tar_with_extents_in_the_outer_file(outer) -> None:
    path, classes = outer
    found = {}
    for member in iter_tar(path):
        assert member.extent is not None
        found[member.name] = [(m.name, m.extent) for m in iter_tar_at(member.extent)]
    assert list(found) == list(classes)
    raw = path.read_bytes()
    for name, members in classes.items():
        assert [n for n, _ in found[name]] == list(members)
        for inner, extent in found[name]:  # read after every walk ended, from the outer file itself
            assert extent.path == str(path.absolute()) and extent.member == inner
            assert extent.read() == members[inner] == raw[extent.offset:extent.offset + extent.size]


def test_the_walk_reads_headers_only_and_nothing_outside_its_extent(tmp_path: Path) -> None:
    big = {f"n01_{i}.JPEG": os.urandom(200_000) for i in range(20)}
    path = tmp_path / "train.tar"
    path.write_bytes(tar_bytes({"n00.tar": tar_bytes({"x.JPEG": b"x"}), "n01.tar": tar_bytes(big),
                                "n02.tar": tar_bytes({"y.JPEG": b"y"})}))
    extent = next(m.extent for m in iter_tar(path) if m.name == "n01.tar")
    data = bytearray(path.read_bytes())  # everything outside n01.tar becomes garbage
    data[:extent.offset] = b"\xff" * extent.offset
    data[extent.offset + extent.size:] = b"\xff" * (len(data) - extent.offset - extent.size)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(extent.mtime_ns, extent.mtime_ns))
    io_counters = Path("/proc/self/io")
    before = _read_bytes(io_counters)
    names = [m.name for m in iter_tar_at(extent)]
    after = _read_bytes(io_counters)
    assert names == list(big)
    if before is not None and after is not None:
        assert after - before < 200_000, f"the walk read {after - before} bytes of a 4 MB tar"


def _read_bytes(counters: Path) -> int | None:
    if not counters.exists():
        return None
    return int(next(line for line in counters.read_text().splitlines() if line.startswith("rchar:")).split()[1])


def test_an_inner_member_that_is_not_a_tar_is_named(tmp_path: Path) -> None:
    path = tmp_path / "train.tar"
    path.write_bytes(tar_bytes({"n00.tar": b"\xff\xd8\xff\xe0 a JPEG, not a tar" + bytes(600)}))
    extent = next(iter_tar(path)).extent
    with pytest.raises(MalformedDataError, match=r"train.tar:n00.tar.*byte 0.*not an uncompressed tar"):
        list(iter_tar_at(extent))


def test_an_inner_tar_cut_short_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "train.tar"
    path.write_bytes(tar_bytes({"n00.tar": tar_bytes(inner_members(3, 1000, "n00"), end=False)}))
    extent = next(iter_tar(path)).extent
    with pytest.raises(CorruptArchiveError, match=r"train.tar:n00.tar.*after member 'n00_2.JPEG'.*end"):
        list(iter_tar_at(extent))


def test_a_replaced_or_truncated_outer_file_is_refused(outer) -> None:
    path, _ = outer
    extents = [m.extent for m in iter_tar(path)]
    with open(path, "r+b") as f:
        f.truncate(extents[-1].offset + 100)
    with pytest.raises(CorruptArchiveError, match="truncated"):
        list(iter_tar_at(extents[-1].__class__(**{**extents[-1].__dict__, "mtime_ns": path.stat().st_mtime_ns})))
    with pytest.raises(CorruptArchiveError, match="replaced"):
        list(iter_tar_at(extents[0]))
