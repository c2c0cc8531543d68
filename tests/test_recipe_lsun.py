"""LSUN scenes: LMDBs inside zips, extracted once and atomically, read in parts by thresher's own walker."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zipfile
from pathlib import Path

import lmdb
import pytest
from e2e import FORMAT_CODECS, served_fixture
from PIL import Image

from thresher.errors import CorruptArchiveError, MalformedDataError, UnsafeArchiveError
from thresher.recipe import BadRecord, Miniature
from thresher.recipes import lsun
from thresher.registry import get_recipe
from thresher.sources import lmdbfile
from thresher.sources.extract import stamp_path

CATEGORIES = ["bedroom", "bridge", "church_outdoor", "classroom", "conference_room", "dining_room", "kitchen",
              "living_room", "restaurant", "tower"]
VAL = "bedroom_val_lmdb.zip"
MEMBER = "bedroom_val_lmdb/data.mdb"


@pytest.fixture
def mini(tmp_path: Path) -> Miniature:
    return get_recipe("lsun/bedroom").write_miniature(tmp_path)


def zip_with(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def pylmdb_file(directory: Path, items: dict[bytes, bytes]) -> bytes:
    """data.mdb as py-lmdb (liblmdb) writes it."""
    env = lmdb.open(str(directory), map_size=64 << 20, lock=False)
    with env.begin(write=True) as txn:
        for key, value in items.items():
            txn.put(key, value)
    env.close()
    return (directory / "data.mdb").read_bytes()


def jpeg(seed: int, size: tuple[int, int] = (20, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (seed * 40 % 256, 80, 120)).save(buffer, "JPEG")
    return buffer.getvalue()


def records(recipe: lsun.Lsun, split: str, files: dict[str, Path]) -> list:
    return list(recipe.records(split, files))


# -- the miniature converts exactly ----------------------------------------------------------------


@pytest.mark.parametrize("variant", ["bedroom", "tower", "all"])
def test_miniature_records_match_exactly_in_key_order(variant: str, tmp_path: Path) -> None:
    recipe = get_recipe(f"lsun/{variant}")
    mini = recipe.write_miniature(tmp_path)
    assert set(mini.files) == {s.filename for s in recipe.sources}
    for split in recipe.split_names:
        got = records(recipe, split, mini.files)
        want = mini.records[split]
        assert len(got) == len(want) > 0
        assert sum(part.records for part in recipe.inputs(split, mini.files)) == len(want)
        for record, expected in zip(got, want, strict=True):
            assert not isinstance(record, BadRecord), record
            assert record["image"] == expected["image"]
            assert record.get("label") == expected.get("label") and record.get("id") == expected.get("id")
            assert record["__where__"].startswith(f"{lsun.zip_name(CATEGORIES[record['label']], split)}:"
                                                  if split != "test" else "test_lmdb.zip:test_lmdb/data.mdb key ")
    labels = {r["label"] for r in records(recipe, "validation", mini.files)}
    assert labels == (set(range(10)) if variant == "all" else {CATEGORIES.index(variant)})


def test_miniature_zip_is_the_published_layout_and_holds_jpeg_and_webp(mini: Miniature) -> None:
    with zipfile.ZipFile(mini.files[VAL]) as archive:
        assert archive.namelist() == ["bedroom_val_lmdb/", MEMBER, "bedroom_val_lmdb/lock.mdb"]
        data = archive.read(MEMBER)
    assert struct.unpack_from("<I", data, 16)[0] == 0xBEEFC0DE  # an LMDB meta page
    formats = {Image.open(io.BytesIO(r["image"])).format for s in ("train", "validation")
               for r in mini.records[s]}
    assert formats == {"JPEG", "WEBP"}
    ids = [r["__where__"].rsplit(" ", 1)[1] for r in records(lsun.RECIPE, "validation", mini.files)]
    assert ids == sorted(ids) and all(len(i) == 40 and int(i, 16) >= 0 for i in ids)


def test_values_are_sniffed_not_assumed_and_a_non_image_is_a_bad_record_naming_the_key(tmp_path: Path) -> None:
    key = b"0001c44e5f5175a7e6358d207660f971d90abaf4"  # a real LSUN image id
    webp = io.BytesIO()
    Image.new("RGB", (9, 7), (1, 2, 3)).save(webp, "WEBP")
    items = {key: webp.getvalue(), b"1" * 40: jpeg(1), b"2" * 40: b"<html>403 Forbidden</html>"}
    scratch = tmp_path / "scratch"
    zip_with(tmp_path / VAL, {MEMBER: pylmdb_file(scratch, items)})
    got = records(lsun.RECIPE, "validation", {VAL: tmp_path / VAL})
    assert [r["image"] for r in got[:2]] == [webp.getvalue(), jpeg(1)]
    assert lsun.sniff(got[0]["image"]) == "webp" and lsun.sniff(got[1]["image"]) == "jpeg"
    bad = got[2]
    assert isinstance(bad, BadRecord) and bad.source == f"{VAL}:{MEMBER}" and bad.where == f"key {'2' * 40}"
    assert "neither JPEG nor WebP" in bad.problem and "3c 68 74 6d" in bad.problem


# -- a hand-written LMDB, byte for byte as liblmdb lays one out -----------------------------------------


def hand_written_lmdb(key: bytes, value: bytes) -> bytes:
    """Three 4096-byte pages: two meta pages (transactions 0 and 1), one leaf holding one node."""
    page = 4096
    no_page = 2**64 - 1

    def meta(number: int, txnid: int, main: tuple[int, int, int, int, int, int]) -> bytes:
        depth, branch, leaf, overflow, entries, root = main
        body = struct.pack("<IIQQ", 0xBEEFC0DE, 1, 0, 1 << 20)  # magic, version, address, map size
        body += struct.pack("<IHHQQQQQ", page, 0, 0, 0, 0, 0, 0, no_page)  # free DB: page size in its pad
        body += struct.pack("<IHHQQQQQ", 0, 0, depth, branch, leaf, overflow, entries, root)
        body += struct.pack("<QQ", 2, txnid)  # last page used, transaction id
        header = struct.pack("<QHHHH", number, 0, 0x08, 0, 0)
        return (header + body).ljust(page, b"\0")

    node = struct.pack("<HHHH", len(value) & 0xFFFF, len(value) >> 16, 0, len(key)) + key + value
    node += b"\0" * (len(node) & 1)
    upper = page - len(node)
    leaf = struct.pack("<QHHHH", 2, 0, 0x02, 16 + 2, upper) + struct.pack("<H", upper)
    leaf = leaf.ljust(upper, b"\0") + node
    empty = (0, 0, 0, 0, 0, no_page)
    return meta(0, 0, empty) + meta(1, 1, (1, 0, 1, 0, 1, 2)) + leaf


def test_a_hand_written_lmdb_reads_as_liblmdb_reads_it(tmp_path: Path) -> None:
    key, value = b"0001c44e5f5175a7e6358d207660f971d90abaf4", jpeg(3, (8, 8))
    data = hand_written_lmdb(key, value)
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "data.mdb").write_bytes(data)
    env = lmdb.open(str(tmp_path / "db"), readonly=True, lock=False)
    with env.begin() as txn:
        assert list(txn.cursor()) == [(key, value)]  # liblmdb agrees the bytes are a valid LMDB
    env.close()
    zip_with(tmp_path / VAL, {"bedroom_val_lmdb/": b"", MEMBER: data})
    got = records(lsun.RECIPE, "validation", {VAL: tmp_path / VAL})
    assert len(got) == 1 and got[0]["image"] == value and got[0]["label"] == 0
    assert got[0]["__where__"] == f"{VAL}:{MEMBER} key {key.decode()}"


# -- inputs: runs of leaf pages, each read alone -------------------------------------------------------


def test_parts_are_leaf_page_runs_that_each_read_alone_in_key_order(tmp_path: Path) -> None:
    items = {hashlib.sha1(str(i).encode()).hexdigest().encode(): bytes([i % 251]) * (50 + i * 37 % 5000)
             for i in range(700)}  # inline values and values on overflow pages, several leaves and branches
    path = tmp_path / "data.mdb"
    path.write_bytes(pylmdb_file(tmp_path, items))
    env = lmdb.open(str(tmp_path), readonly=True, lock=False)
    stat = env.stat()
    env.close()
    assert stat["depth"] >= 3 and stat["overflow_pages"] > 0
    expected = sorted(items.items())
    for per_part in (1, 50, 10**6):
        parts = lmdbfile.parts(path, "x", per_part)
        assert sum(p.records for p in parts) == len(items)
        assert sum(len(p.pages) for p in parts) == stat["leaf_pages"]
        assert all(p.records >= per_part for p in parts[:-1])
        assert all(p.records - per_part < 4096 // 50 for p in parts)  # the fewest whole leaves reaching per_part
        got = []
        for part in reversed(parts):  # any order: no part needs another
            mine = list(lmdbfile.items(path, "x", part.pages))
            assert len(mine) == part.records
            got = mine + got
        assert got == expected


@pytest.mark.parametrize("compact", [False, True])
def test_an_lmdb_copied_by_liblmdb_reads_the_same(tmp_path: Path, compact: bool) -> None:
    """A published LMDB may be a copy (mdb_env_copy) of one written over many transactions."""
    env = lmdb.open(str(tmp_path / "live"), map_size=64 << 20, lock=False)
    items = {f"{i:040x}".encode(): jpeg(i) + bytes(i * 97) for i in range(60)}
    for key, value in items.items():  # one transaction each, then some deleted: free pages in the file
        with env.begin(write=True) as txn:
            txn.put(key, value)
    with env.begin(write=True) as txn:
        for key in list(items)[::7]:
            txn.delete(key)
            del items[key]
    (tmp_path / "copy").mkdir()
    env.copy(str(tmp_path / "copy"), compact=compact)
    env.close()
    path = tmp_path / "copy" / "data.mdb"
    got = [kv for part in lmdbfile.parts(path, "x", 5) for kv in lmdbfile.items(path, "x", part.pages)]
    assert got == sorted(items.items())


def test_recipe_inputs_split_an_lmdb_and_read_gives_exactly_their_records(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    items = {f"{i:040x}".encode(): jpeg(i) for i in range(120)}
    zip_with(tmp_path / VAL, {MEMBER: pylmdb_file(tmp_path, items)})
    files = {VAL: tmp_path / VAL}
    monkeypatch.setattr(lsun, "RECORDS_PER_INPUT", 10)
    inputs = lsun.RECIPE.inputs("validation", files)
    assert len(inputs) > 3 and sum(i.records for i in inputs) == 120
    got = [r for part in inputs for r in lsun.RECIPE.read("validation", files, part)]
    assert [r["image"] for r in got] == [items[k] for k in sorted(items)]
    assert all(len(list(lsun.RECIPE.read("validation", files, part))) == part.records for part in inputs)


# -- extraction: atomic, re-used, redone when the zip changes -------------------------------------------


def test_extraction_is_reused_and_redone_only_when_the_zip_changes(mini: Miniature) -> None:
    lsun.RECIPE.inputs("validation", mini.files)
    extracted = mini.files[VAL].parent / MEMBER
    assert extracted.is_file() and stamp_path(extracted).is_file()
    before = extracted.stat()
    lsun.RECIPE.inputs("validation", mini.files)
    assert extracted.stat().st_ino == before.st_ino and extracted.stat().st_mtime_ns == before.st_mtime_ns
    items = {b"9" * 40: jpeg(9)}
    zip_with(mini.files[VAL], {MEMBER: pylmdb_file(mini.files[VAL].parent / "other", items)})
    got = records(lsun.RECIPE, "validation", mini.files)
    assert [r["image"] for r in got] == [items[b"9" * 40]]


def test_a_damaged_zip_member_leaves_nothing_under_the_final_name(tmp_path: Path) -> None:
    data = pylmdb_file(tmp_path / "db", {b"1" * 40: jpeg(1)})
    path = zip_with(tmp_path / VAL, {MEMBER: data}, zipfile.ZIP_STORED)
    raw = bytearray(path.read_bytes())
    at = raw.index(data[4096:4200])  # inside the member's stored bytes: the CRC-32 no longer matches
    raw[at + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptArchiveError, match=f"{VAL} \\(member '{MEMBER}'\\)"):
        lsun.RECIPE.inputs("validation", {VAL: path})
    folder = tmp_path / "bedroom_val_lmdb"
    assert not (folder / "data.mdb").exists() and not stamp_path(folder / "data.mdb").exists()
    assert os.listdir(folder) == []  # no temporary left behind either


def test_a_zip_without_the_lmdb_names_the_missing_member(tmp_path: Path) -> None:
    zip_with(tmp_path / VAL, {"bedroom_val_lmdb/lock.mdb": bytes(8192)})
    with pytest.raises(MalformedDataError, match=f"{VAL} \\(member '{MEMBER}'\\): is not in the zip"):
        lsun.RECIPE.inputs("validation", {VAL: tmp_path / VAL})


def test_a_member_claiming_an_absurd_expansion_is_refused(tmp_path: Path) -> None:
    zip_with(tmp_path / VAL, {MEMBER: bytes(64 << 20)})  # zeros: compresses a thousandfold
    with pytest.raises(UnsafeArchiveError, match="bomb|limit"):
        lsun.RECIPE.inputs("validation", {VAL: tmp_path / VAL})


def test_a_file_that_is_not_a_zip_is_named(tmp_path: Path) -> None:
    (tmp_path / VAL).write_bytes(b"<html>502 Bad Gateway</html>")
    with pytest.raises(CorruptArchiveError, match=VAL):
        lsun.RECIPE.inputs("validation", {VAL: tmp_path / VAL})


# -- a damaged LMDB is named, never a crash ------------------------------------------------------------


def damaged(tmp_path: Path, change) -> dict[str, Path]:
    items = {hashlib.sha1(str(i).encode()).hexdigest().encode(): jpeg(i) for i in range(80)}
    data = bytearray(pylmdb_file(tmp_path / "db", items))
    change(data)
    return {VAL: zip_with(tmp_path / VAL, {MEMBER: bytes(data)})}


def leaf_pages_of(data: bytearray) -> list[int]:
    return [n for n in range(2, len(data) // 4096) if struct.unpack_from("<H", data, n * 4096 + 10)[0] == 0x02]


def set_upper(data: bytearray, page: int, value: int) -> None:
    struct.pack_into("<H", data, page * 4096 + 14, value)


@pytest.mark.parametrize(("change", "words"), [
    (lambda d: d.__delitem__(slice(len(d) // 2, None)), "last page"),  # truncated
    (lambda d: d.__setitem__(slice(0, 64), bytes(64)), "meta page 0"),  # meta page overwritten
    (lambda d: d.__setitem__(slice(4096 + 16, 4096 + 20), b"\0\0\0\0"), "meta page 1"),  # wrong magic
    (lambda d: struct.pack_into("<Q", d, leaf_pages_of(d)[0] * 4096, 7777), "has number 7777"),
    (lambda d: set_upper(d, leaf_pages_of(d)[-1], 9000), "free space bounds"),
    (lambda d: struct.pack_into("<H", d, leaf_pages_of(d)[-1] * 4096 + 16, 4095), "lies at offset 4095"),
    (lambda d: d.__setitem__(slice(len(d) - 4096, None), bytes(4096)), "page"),  # a zeroed last page
])
def test_a_damaged_lmdb_is_malformed_data_naming_the_file(tmp_path: Path, change, words: str) -> None:
    files = damaged(tmp_path, change)
    with pytest.raises(MalformedDataError) as caught:
        for part in lsun.RECIPE.inputs("validation", files):
            list(lsun.RECIPE.read("validation", files, part))
    message = str(caught.value)
    assert message.startswith(f"{VAL}:{MEMBER} (LMDB data file): ") and words in message, message


def test_a_damaged_overflow_page_is_named_when_its_part_is_read(tmp_path: Path) -> None:
    big = jpeg(5, (200, 150)) + bytes(9000)  # surely on overflow pages
    data = bytearray(pylmdb_file(tmp_path / "db", {b"a" * 40: big, b"b" * 40: jpeg(1)}))
    overflow = next(n for n in range(2, len(data) // 4096) if struct.unpack_from("<H", data, n * 4096 + 10)[0] == 4)
    struct.pack_into("<H", data, overflow * 4096 + 10, 0x02)  # no longer flagged as an overflow page
    files = {VAL: zip_with(tmp_path / VAL, {MEMBER: bytes(data)})}
    inputs = lsun.RECIPE.inputs("validation", files)  # the walk of leaves does not touch values
    with pytest.raises(MalformedDataError, match=f"overflow page {overflow} has number"):
        list(lsun.RECIPE.read("validation", files, inputs[0]))


def test_an_empty_lmdb_file_is_named(tmp_path: Path) -> None:
    files = {VAL: zip_with(tmp_path / VAL, {MEMBER: b""})}
    with pytest.raises(MalformedDataError, match="LMDB data file.*empty"):
        lsun.RECIPE.inputs("validation", files)


# -- published facts -------------------------------------------------------------------------------


def test_published_facts() -> None:
    recipe = lsun.RECIPE
    assert recipe.variant_names == (*CATEGORIES, "all")
    bedroom = get_recipe("lsun")
    assert bedroom.variant == "bedroom"
    assert [(s.filename, s.size) for s in bedroom.sources] == [("bedroom_train_lmdb.zip", 45922737680),
                                                              ("bedroom_val_lmdb.zip", 4670661)]
    assert bedroom.sources[1].sha256 == "5d022e781b241c25ec2e1f1f769afcdb8091d7fd58362667aec03137b8114b12"
    assert bedroom.sources[1].urls == ("http://dl.yf.io/lsun/scenes/bedroom_val_lmdb.zip",)
    assert all("TFDS" in s.checksum_source and s.md5 is None for s in bedroom.sources)
    tower = get_recipe("lsun/tower")
    assert tower.source("tower_train_lmdb.zip").sha256 == \
        "440caec74c9641cb51fd235a5970c8e4931c3af875aeb044a8bcca956e106309"
    everything = get_recipe("lsun/all")
    assert len(everything.sources) == 21 and all(s.sha256 and s.size for s in everything.sources[:20])
    test = everything.source("test_lmdb.zip")
    assert (test.size, test.sha256, test.md5) == (None, None, None) and "none published" in test.checksum_source
    assert test.urls == ("http://dl.yf.io/lsun/scenes/test_lmdb.zip",)
    assert [(s.name, s.num_records) for s in everything.splits][1:] == [("validation", 3000), ("test", 10000)]
    assert everything.split_schema("test").names == ("image", "id")
    assert bedroom.split_names == ("train", "validation") and bedroom.default_codec == "datum"
    assert everything.default_codec == "tensorprotos"  # the test split has no label
    assert not any(s.manual for s in everything.sources)
    image, label = recipe.schema
    assert image.encoding == "jpeg or webp" and label.names == tuple(CATEGORIES)
    assert "Yu" in recipe.citation and "1506.03365" in recipe.citation


# -- end to end through the loopback server --------------------------------------------------------


served = served_fixture("lsun/all")


@pytest.mark.parametrize(("fmt", "codec"), FORMAT_CODECS)
def test_lsun_all_round_trips_through_the_mirror(fmt: str, codec: str | None, served, tmp_path: Path) -> None:
    served.round_trip(tmp_path, fmt, codec, datum_splits=("train", "validation"))  # Datum: the labelled splits
    downloads = list(tmp_path.rglob("bedroom_val_lmdb/data.mdb"))
    assert len(downloads) == 1 and stamp_path(downloads[0]).is_file()  # extracted beside the download


def test_two_workers_reading_their_own_leaf_pages_give_the_same_bytes(served, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs (runs of leaf pages) handed to worker processes, which find the extraction done."""
    monkeypatch.setattr(lsun, "RECORDS_PER_INPUT", 2)
    served.assert_workers_agree(tmp_path, shard_size=3000)
