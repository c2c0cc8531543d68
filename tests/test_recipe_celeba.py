"""CelebA recipe: the miniature converts exactly in every format, real lines decode, bad input is named."""

from __future__ import annotations

import io
import multiprocessing
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from e2e import FORMAT_CODECS, Mirror, assert_same_records, recipe_supports
from PIL import Image
from server import LoopbackServer

import thresher
from thresher.conversion.convert import validate
from thresher.errors import (
    CorruptArchiveError,
    MalformedDataError,
    OfflineError,
    UnsafeArchiveError,
    UnsupportedCodecError,
)
from thresher.miniature import write_checksums
from thresher.recipe import BadRecord, Input, Miniature, Record
from thresher.recipes.celeba import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    IDENTITIES,
    IMAGES,
    LANDMARKS,
    PARTITION,
    RECIPE,
)
from thresher.sources.extent import Extent, resolved
from thresher.sources.ziparchive import ZipMemberRef

# Lines exactly as the published files have them (count line, header with its trailing space,
# unpadded first value, padded columns), for the first image.
REAL_ATTRIBUTES = (
    "202599\n" + " ".join(ATTRIBUTE_NAMES) + " \n"
    "000001.jpg -1  1  1 -1 -1 -1 -1 -1 -1 -1 -1  1 -1 -1 -1 -1 -1 -1  1  1 -1  1 -1 -1  1 -1 -1  1 -1 -1 -1  1  1 -1"
    "  1 -1  1 -1 -1  1\n"
)
REAL_LANDMARKS = (
    "202599\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x "
    "rightmouth_y\n000001.jpg 69  109  106  113   77  142   73  152  108  154\n"
)
REAL_IDENTITY = "000001.jpg 2880\n"
REAL_PARTITION = "000001.jpg 0\n"


@pytest.fixture
def mini(tmp_path: Path) -> Miniature:
    return RECIPE.write_miniature(tmp_path)


def records(split: str, files: Mapping[str, Path]) -> list[Record | BadRecord]:
    return [r if isinstance(r, BadRecord) else resolved(r) for r in RECIPE.records(split, files)]


def rewrite(mini: Miniature, filename: str, old: str, new: str) -> None:
    path = mini.files[filename]
    text = path.read_bytes().decode()  # the published line ends kept as they are
    assert old in text, old
    path.write_bytes(text.replace(old, new, 1).encode())


def zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def write_zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> None:
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


# -- the miniature converts exactly ----------------------------------------------------------------


def test_miniature_records_match_exactly(mini: Miniature) -> None:
    for split in RECIPE.split_names:
        got = records(split, mini.files)
        want = mini.records[split]
        assert len(got) == len(want) > 0
        for record, expected in zip(got, want, strict=True):
            assert not isinstance(record, BadRecord), record
            assert record["image"] == expected["image"]
            assert record["attributes"].dtype == np.uint8 and record["attributes"].shape == (40,)
            assert np.array_equal(record["attributes"], expected["attributes"])
            assert type(record["identity"]) is int and record["identity"] == expected["identity"]
            assert record["landmarks"].dtype == np.int32 and record["landmarks"].shape == (5, 2)
            assert np.array_equal(record["landmarks"], expected["landmarks"])
            assert record["__where__"].startswith(f"{IMAGES}:img_align_celeba/")
            assert validate(dict(record), RECIPE.schema, record["__where__"]) is None


def test_one_input_per_image_in_partition_order_each_readable_alone(mini: Miniature) -> None:
    order = {0: [], 1: [], 2: []}
    for line in mini.files[PARTITION].read_text().splitlines():
        name, code = line.split()
        order[int(code)].append(f"img_align_celeba/{name}")
    for split, code in (("train", 0), ("validation", 1), ("test", 2)):
        inputs = RECIPE.inputs(split, mini.files)
        assert [part.name for part in inputs] == order[code]
        assert all(isinstance(part, Input) and part.records == 1 for part in inputs)
        # Shipped to a worker as it is: each input read alone, last first, gives its own record.
        for part, want in reversed(list(zip(inputs, mini.records[split], strict=True))):
            (record,) = RECIPE.read(split, mini.files, pickle.loads(pickle.dumps(part)))
            assert resolved(record)["image"] == want["image"]


def test_stored_members_are_extents_and_deflated_ones_are_read_by_the_input(mini: Miniature) -> None:
    with zipfile.ZipFile(mini.files[IMAGES]) as archive:
        methods = {info.filename: info.compress_type for info in archive.infolist() if not info.is_dir()}
    assert set(methods.values()) == {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
    for split in RECIPE.split_names:
        for part in RECIPE.inputs(split, mini.files):
            (record,) = RECIPE.read(split, mini.files, part)
            stored = methods[part.name] == zipfile.ZIP_STORED
            assert isinstance(record["image"], Extent if stored else bytes)


def _read_in_child(ref: ZipMemberRef) -> bytes:
    return ref.read()


def test_a_deflated_member_is_read_by_another_process_from_its_reference(mini: Miniature) -> None:
    part = RECIPE.inputs("validation", mini.files)[0]
    ref = part.where.place
    assert isinstance(ref, ZipMemberRef)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        data = pool.apply(_read_in_child, (ref,))
    assert data == mini.records["validation"][0]["image"]


def test_miniature_is_in_the_published_layout(mini: Miniature) -> None:
    members = zip_members(mini.files[IMAGES])
    assert next(iter(members)) == "img_align_celeba/" and members["img_align_celeba/"] == b""
    names = sorted(n for n in members if n.endswith(".jpg"))
    assert names == [f"img_align_celeba/{i:06d}.jpg" for i in range(1, len(names) + 1)]
    assert list(members)[1:] != names  # the zip's order is not the partition's
    for name in names:
        image = Image.open(io.BytesIO(members[name]))
        assert (image.format, image.size, image.mode) == ("JPEG", (178, 218), "RGB")
    count = len(names)
    attributes = mini.files[ATTRIBUTES].read_text().splitlines()
    assert attributes[0] == str(count) and attributes[1] == " ".join(ATTRIBUTE_NAMES) + " "
    assert all(len(line.split()) == 41 and set(line.split()[1:]) <= {"-1", "1"} for line in attributes[2:])
    landmarks = mini.files[LANDMARKS].read_text().splitlines()
    assert landmarks[0] == str(count) and landmarks[1].split() == REAL_LANDMARKS.splitlines()[1].split()
    partition = [line.split() for line in mini.files[PARTITION].read_text().splitlines()]
    assert [code for _, code in partition] == sorted(code for _, code in partition)  # train, valid, test
    assert len(mini.files[IDENTITIES].read_text().splitlines()) == count


def test_real_lines_decode(tmp_path: Path) -> None:
    """The first image's published lines; its attributes read by name from the header."""
    jpeg = io.BytesIO()
    Image.new("RGB", (178, 218), (90, 60, 40)).save(jpeg, "JPEG")
    write_zip(tmp_path / IMAGES, {"img_align_celeba/000001.jpg": jpeg.getvalue()})
    texts = {ATTRIBUTES: REAL_ATTRIBUTES, LANDMARKS: REAL_LANDMARKS, IDENTITIES: REAL_IDENTITY,
             PARTITION: REAL_PARTITION}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    files = {name: tmp_path / name for name in (IMAGES, *texts)}
    (record,) = records("train", files)
    present = {ATTRIBUTE_NAMES[i] for i in np.flatnonzero(record["attributes"])}
    assert present == {"Arched_Eyebrows", "Attractive", "Brown_Hair", "Heavy_Makeup", "High_Cheekbones",
                       "Mouth_Slightly_Open", "No_Beard", "Pointy_Nose", "Smiling", "Straight_Hair",
                       "Wearing_Earrings", "Wearing_Lipstick", "Young"}
    assert record["identity"] == 2880
    assert record["landmarks"].tolist() == [[69, 109], [106, 113], [77, 142], [73, 152], [108, 154]]
    assert record["image"] == jpeg.getvalue()
    assert records("validation", files) == [] and records("test", files) == []


@pytest.mark.parametrize(("fmt", "codec"), FORMAT_CODECS)
def test_round_trip_through_the_loopback_mirror(fmt: str, codec: str | None, mirror: Mirror,
                                                mirror_server: LoopbackServer, tmp_path: Path) -> None:
    def prepare() -> thresher.Manifest:
        return thresher.prepare("celeba", root=tmp_path, mirror=mirror_server.url, offline=True,
                                checksums=mirror.checksums["celeba"], format=fmt, codec=codec, progress=False)

    if not recipe_supports(RECIPE, codec):
        with pytest.raises(UnsupportedCodecError):
            prepare()
        return
    manifest = prepare()
    for split in RECIPE.split_names:
        want = mirror.miniatures["celeba"].records[split]
        assert manifest.splits[split].records == len(want)
        ds = thresher.open(tmp_path / "celeba" / fmt / split, decode=False)  # the JPEGs as published
        try:
            assert_same_records([ds[i] for i in range(len(ds))], want, RECIPE.schema, f"celeba/{fmt}/{split}")
        finally:
            ds.close()


def test_two_workers_reading_their_own_members_give_the_same_bytes(mirror: Mirror, mirror_server: LoopbackServer,
                                                                   tmp_path: Path) -> None:
    """Inputs handed to worker processes (stored members by extent, deflated ones by reference)."""
    def prepare(where: str, workers: int) -> thresher.Manifest:
        return thresher.prepare("celeba", root=tmp_path / where, mirror=mirror_server.url, offline=True,
                                checksums=mirror.checksums["celeba"], format="lmdb", workers=workers,
                                shard_size=20_000, progress=False)

    one, two = prepare("one", 1), prepare("two", 2)
    assert one.dumps() == two.dumps()
    assert len(one.splits["train"].shards) > 1, "shard_size should split train"


# -- published facts -------------------------------------------------------------------------------


def test_published_metadata() -> None:
    drive = "https://drive.google.com/uc?export=download&id="
    published = {
        IMAGES: ("0B7EVK8r0v71pZjFTYXZWM3FlRnM", 1443490838, "00d2c5bc6d35e252742224ab0c1e8fcb",
                 "46fb89443c578308acf364d7d379fe1b9efb793042c0af734b6112e4fd3a8c74"),
        ATTRIBUTES: ("0B7EVK8r0v71pblRyaVFSWGxPY0U", 26721026, "75e246fa4810816ffd6ee81facbd244c",
                     "f0e5da289d5ccf75ffe8811132694922b60f2af59256ed362afa03fefba324d0"),
        IDENTITIES: ("1_ee_0u7vcNLOfNLegJRHmolfH5ICW-XS", 3424458, "32bd1bd63d3c78cd57e08160ec5ed1e2",
                     "c6143857c3e2630ac2da9f782e9c1232e5e59be993a9d44e8a7916c78a6158c0"),
        LANDMARKS: ("0B7EVK8r0v71pd0FJY3Blby1HUTQ", 12156055, "cc24ecafdb5b50baae59b03474781f8c",
                    "6c02a87569907f6db2ba99019085697596730e8129f67a3d61659f198c48d43b"),
        PARTITION: ("0B7EVK8r0v71pY0NSMzRuSXJEVkk", 2836386, "d32c9cbf5e040fd4025c592c306e6668",
                    "fc955bcb3ef8fbdf7d5640d9a8693a8431b5f2ee291a5c1449a1549e7e073fe7"),
    }
    assert [s.filename for s in RECIPE.sources] == list(published)
    for source in RECIPE.sources:
        file_id, size, md5, sha256 = published[source.filename]
        assert source.urls == (drive + file_id,)
        assert (source.size, source.md5, source.sha256) == (size, md5, sha256)
        assert "torchvision" in source.checksum_source and "TFDS" in source.checksum_source
        assert not source.manual
    assert [(s.name, s.num_records) for s in RECIPE.splits] == [("train", 162770), ("validation", 19867),
                                                                  ("test", 19962)]
    assert sum(s.num_records for s in RECIPE.splits) == 202599
    image, attributes, identity, landmarks = RECIPE.schema
    assert (image.name, image.encoding) == ("image", "jpeg")
    assert attributes.names == ATTRIBUTE_NAMES and attributes.multi and len(ATTRIBUTE_NAMES) == 40
    assert (identity.name, identity.minimum) == ("identity", 1)
    assert (landmarks.shape, landmarks.dtype) == ((5, 2), "int32")
    assert "left eye, right eye, nose, left mouth corner, right mouth corner" in landmarks.description
    assert RECIPE.default_codec == "tensorprotos"
    assert "non-commercial" in RECIPE.license and "Liu" in RECIPE.citation and "2015" in RECIPE.citation
    assert RECIPE.citation.count("{") == RECIPE.citation.count("}")


def test_stated_counts_come_from_the_partition_file(mini: Miniature) -> None:
    (count,) = RECIPE.stated_counts("validation", mini.files)
    assert (count.source, count.found) == (PARTITION, len(mini.records["validation"]))


# -- malformed input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("000002.jpg 3", ["line 2", "<0|1|2>"]),
        ("000002.jpg", ["line 2"]),
        ("000001.jpg 0", ["line 2", "listed twice"]),
    ],
)
def test_bad_partition_line_is_malformed_data_naming_the_line(mini: Miniature, line: str, words: list[str]) -> None:
    rewrite(mini, PARTITION, "000002.jpg 0", line)
    with pytest.raises(MalformedDataError) as caught:
        RECIPE.inputs("test", mini.files)
    assert str(caught.value).startswith(PARTITION)
    for word in words:
        assert word in str(caught.value)


def test_html_page_saved_as_a_text_file_is_named(mini: Miniature) -> None:
    mini.files[PARTITION].write_text("<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title>\n")
    with pytest.raises(MalformedDataError, match=f"{PARTITION} \\(line 1\\)"):
        RECIPE.inputs("train", mini.files)
    mini.files[ATTRIBUTES].write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    mini.files[PARTITION].write_text("000001.jpg 0\n")
    with pytest.raises(MalformedDataError, match=f"{ATTRIBUTES} \\(line 1\\)"):
        RECIPE.inputs("train", mini.files)


@pytest.mark.parametrize(
    ("filename", "old", "new", "where"),
    [
        (ATTRIBUTES, "12\r\n", "", "line 1"),
        (ATTRIBUTES, "Arched_Eyebrows Attractive", "Attractive Arched_Eyebrows", "line 2"),
        (LANDMARKS, "nose_x nose_y ", "", "line 2"),
    ],
)
def test_wrong_header_is_malformed_data(mini: Miniature, filename: str, old: str, new: str, where: str) -> None:
    rewrite(mini, filename, old, new)
    with pytest.raises(MalformedDataError) as caught:
        RECIPE.inputs("train", mini.files)
    assert str(caught.value).startswith(f"{filename} ({where})")


def line_of(mini: Miniature, filename: str, image: str) -> tuple[int, str]:
    lines = mini.files[filename].read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if line.startswith(image))
    return number, lines[number - 1]


@pytest.mark.parametrize(
    ("filename", "change", "problem"),
    [
        (ATTRIBUTES, lambda line: line[:-2] + " 0", "value 40 is 0, not one of -1, 1"),
        (ATTRIBUTES, lambda line: line[:-3], "expected 40 values after the image name, found 39"),
        (LANDMARKS, lambda line: line.replace(line.split()[3], "7x", 1), "value 3 is '7x', not an integer"),
        (LANDMARKS, lambda line: line.replace(line.split()[1], "-5", 1), "value 1 is -5, below 0"),
        (IDENTITIES, lambda line: line.split()[0] + " 0", "value 1 is 0, below 1"),
        (IDENTITIES, lambda line: line.split()[0], "expected 1 values after the image name, found 0"),
    ],
)
def test_bad_annotation_line_is_a_bad_record_naming_file_line_and_image(mini: Miniature, filename: str,
                                                                       change, problem: str) -> None:
    number, line = line_of(mini, filename, "000002.jpg")
    rewrite(mini, filename, line, change(line))
    got = records("train", mini.files)
    bad = got[1]
    assert isinstance(bad, BadRecord)
    assert (bad.source, bad.where, bad.problem) == (filename, f"line {number} (image 000002.jpg)", problem)
    assert str(bad.error()).startswith(f"{filename} (line {number}")
    assert [r["image"] for i, r in enumerate(got) if i != 1] == \
        [r["image"] for i, r in enumerate(mini.records["train"]) if i != 1]


def test_image_without_an_annotation_line_is_a_bad_record(mini: Miniature) -> None:
    _, line = line_of(mini, IDENTITIES, "000008.jpg")
    rewrite(mini, IDENTITIES, line + "\r\n", "")
    got = records("validation", mini.files)
    bad = got[1]
    assert isinstance(bad, BadRecord) and bad.source == IDENTITIES and bad.where == "image 000008.jpg"
    assert "no line" in bad.problem and PARTITION in bad.problem


def test_second_line_for_an_image_is_a_bad_record(mini: Miniature) -> None:
    _, line = line_of(mini, IDENTITIES, "000003.jpg")
    mini.files[IDENTITIES].write_bytes(mini.files[IDENTITIES].read_bytes() + line.encode() + b"\r\n")
    bad = records("train", mini.files)[2]
    assert isinstance(bad, BadRecord) and "second line" in bad.problem and "image 000003.jpg" in bad.where


def test_image_missing_from_the_zip_is_a_bad_record_in_its_place(mini: Miniature) -> None:
    members = zip_members(mini.files[IMAGES])
    del members["img_align_celeba/000011.jpg"]
    write_zip(mini.files[IMAGES], members)
    got = records("test", mini.files)
    assert isinstance(got[1], BadRecord) and got[1].source == IMAGES
    assert got[1].where == "img_align_celeba/000011.jpg" and "missing" in got[1].problem
    assert got[0]["image"] == mini.records["test"][0]["image"]
    assert got[2]["image"] == mini.records["test"][2]["image"]


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_member_that_is_not_a_jpeg_is_a_bad_record(mini: Miniature, method: int) -> None:
    members = zip_members(mini.files[IMAGES])
    members["img_align_celeba/000005.jpg"] = b"<html>quota exceeded</html>"
    write_zip(mini.files[IMAGES], members, method)
    got = records("train", mini.files)
    assert isinstance(got[4], BadRecord) and got[4].where == "img_align_celeba/000005.jpg"
    assert "not a JPEG" in got[4].problem
    assert not any(isinstance(r, BadRecord) for i, r in enumerate(got) if i != 4)


def test_damaged_deflated_member_is_a_corrupt_archive_error_naming_it(mini: Miniature) -> None:
    members = zip_members(mini.files[IMAGES])
    target = "img_align_celeba/000007.jpg"
    write_zip(mini.files[IMAGES], {target: members[target]})
    with zipfile.ZipFile(mini.files[IMAGES]) as archive:
        info = archive.getinfo(target)
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data = bytearray(mini.files[IMAGES].read_bytes())
    data[start + info.compress_size // 2] ^= 0xFF
    mini.files[IMAGES].write_bytes(bytes(data))
    (part,) = [p for p in RECIPE.inputs("validation", mini.files) if p.name == target]
    with pytest.raises(CorruptArchiveError) as caught:
        list(RECIPE.read("validation", mini.files, part))
    assert f"member {target!r}" in str(caught.value)


def test_archive_replaced_after_the_walk_is_refused(mini: Miniature) -> None:
    part = RECIPE.inputs("validation", mini.files)[0]
    members = zip_members(mini.files[IMAGES])
    replacement = mini.files[IMAGES].with_name("new.zip")
    write_zip(replacement, members)
    replacement.replace(mini.files[IMAGES])
    with pytest.raises(CorruptArchiveError, match="replaced"):
        list(RECIPE.read("validation", mini.files, part))


def test_zip_that_is_not_a_zip_is_named(mini: Miniature) -> None:
    mini.files[IMAGES].write_bytes(b"<!DOCTYPE html><html><title>Google Drive - Quota exceeded</title></html>")
    with pytest.raises(CorruptArchiveError) as caught:
        RECIPE.inputs("train", mini.files)
    assert str(caught.value).startswith(IMAGES) and "not a readable zip" in str(caught.value)


def test_zip_member_escaping_the_folder_is_refused(mini: Miniature) -> None:
    members = zip_members(mini.files[IMAGES])
    members["../../000001.jpg"] = members["img_align_celeba/000001.jpg"]
    write_zip(mini.files[IMAGES], members)
    with pytest.raises(UnsafeArchiveError, match=IMAGES):
        RECIPE.inputs("train", mini.files)


def test_locate_names_the_archive_and_the_partition_file() -> None:
    assert RECIPE.locate("test", 3) == f"{IMAGES} image number 3 of test in {PARTITION}"


def test_files_placed_by_hand_are_used_without_network(tmp_path: Path) -> None:
    """The documented way out when Drive refuses: put the five files in the download directory."""
    downloads = tmp_path / "celeba" / "downloads"
    with pytest.raises(OfflineError) as caught:
        thresher.prepare("celeba", root=tmp_path, offline=True, format="hdf5", progress=False)
    screen = str(caught.value)
    assert f"Put these files in {downloads.absolute()}/" in screen and "in a browser" in screen
    assert all(f"  {s.filename}  {s.size:,} bytes" in screen for s in RECIPE.sources)
    downloads.mkdir(parents=True, exist_ok=True)
    mini = RECIPE.write_miniature(downloads)  # what a person would have saved there
    checksums = write_checksums(mini.files, tmp_path / "mine.tsv")  # their files, not the publisher's
    manifest = thresher.prepare("celeba", root=tmp_path, offline=True, checksums=checksums, format="hdf5",
                                progress=False)
    assert {split: manifest.splits[split].records for split in RECIPE.split_names} == \
        {split: len(rows) for split, rows in mini.records.items()}
