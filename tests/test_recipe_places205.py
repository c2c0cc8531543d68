"""Places205: split lists decide the splits, images located once in the uncompressed tar, names from folders."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest
from e2e import FORMAT_CODECS, served_fixture
from PIL import Image

import thresher
from thresher.acquire import manual_instructions
from thresher.errors import MalformedDataError
from thresher.fetch.downloader import ManualDownloadRequired
from thresher.recipe import BadRecord, Miniature
from thresher.recipes import places205
from thresher.recipes.places205 import IMAGE_ROOT, IMAGES, LISTS, RECIPE
from thresher.sources.extent import Extent, resolved

TRAIN = "trainvalsplit_places205/train_places205.csv"
VAL = "trainvalsplit_places205/val_places205.csv"
IMAGES_GZ = "imagesPlaces205_resize.tar.gz"  # the images as the form's link gives them


@pytest.fixture
def mini(tmp_path: Path) -> Miniature:
    return RECIPE.write_miniature(tmp_path)


def records(split: str, files: dict[str, Path]) -> list:
    return [r if isinstance(r, BadRecord) else resolved(r) for r in RECIPE.records(split, files)]


def tar_of(path: Path, members: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def read_tar(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def with_lists(mini: Miniature, train: str, val: str = "") -> dict[str, Path]:
    path = tar_of(mini.files[LISTS].parent / "other-lists.tar.gz", {TRAIN: train.encode(), VAL: val.encode()}, "w:gz")
    return {**mini.files, LISTS: path}


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(buffer, "JPEG")
    return buffer.getvalue()


# -- the miniature converts exactly ----------------------------------------------------------------


def test_miniature_records_match_exactly_in_list_order(mini: Miniature) -> None:
    for split in RECIPE.split_names:
        inputs = RECIPE.inputs(split, mini.files)
        assert sum(i.records for i in inputs) == len(mini.records[split])
        got = records(split, mini.files)
        assert len(got) == len(mini.records[split]) > 0
        for record, want in zip(got, mini.records[split], strict=True):
            assert not isinstance(record, BadRecord), record
            assert {k: record[k] for k in want} == want
    assert all(isinstance(r["image"], Extent) for r in RECIPE.records("validation", mini.files))  # read by workers
    listed = [line.split()[0] for line in read_tar(mini.files[LISTS])[TRAIN].decode().splitlines()]
    assert [r["__where__"] for r in records("train", mini.files)] == [f"{IMAGES}:{IMAGE_ROOT}{p}" for p in listed]
    assert listed != sorted(listed)  # list order, not tar order


def test_miniature_is_in_the_published_layout(mini: Miniature) -> None:
    head = mini.files[IMAGES].read_bytes()[:512]
    assert head[257:262] == b"ustar" and not head.startswith(b"\x1f\x8b")  # the uncompressed tar
    names = list(read_tar(mini.files[IMAGES]))
    assert all(n.startswith("data/vision/torralba/deeplearning/images256/") and n.endswith(".jpg") for n in names)
    assert mini.files[LISTS].read_bytes()[:2] == b"\x1f\x8b"
    assert set(read_tar(mini.files[LISTS])) == {TRAIN, VAL}


def test_a_real_list_line_and_a_nested_category_decode(tmp_path: Path) -> None:
    """Lines as the published csv writes them: '<path under images256> <label>', space-separated."""
    names = places205.miniature_class_names()
    train_lines = [f"{n[0]}/{n}/gsun_{i:032x}.jpg {i}" for i, n in enumerate(names)]
    train_lines[3] = "a/apartment_building/outdoor/gsun_0003586c3eedd97457b2d729e1e4e8e2.jpg 3"
    images = {f"{IMAGE_ROOT}{line.split()[0]}": jpeg() for line in train_lines}
    files = {IMAGES: tar_of(tmp_path / IMAGES, images),
             LISTS: tar_of(tmp_path / LISTS, {TRAIN: ("\n".join(train_lines) + "\n").encode(),
                                              VAL: train_lines[3].encode() + b"\n"}, "w:gz")}
    got = records("validation", files)
    assert len(got) == 1 and got[0]["label"] == 3 and got[0]["image"] == jpeg()
    assert got[0]["__where__"] == (f"{IMAGES}:data/vision/torralba/deeplearning/images256/a/apartment_building/"
                                   "outdoor/gsun_0003586c3eedd97457b2d729e1e4e8e2.jpg")
    assert RECIPE.with_files(files).schema["label"].names[:5] == \
        ("abbey", "airport_terminal", "alley", "apartment_building/outdoor", "aquarium")


def test_inputs_are_runs_of_lines_each_read_alone(mini: Miniature, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(places205, "LINES_PER_INPUT", 16)
    inputs = RECIPE.inputs("train", mini.files)
    assert len(inputs) == 13 and [i.records for i in inputs] == [16] * 12 + [13]
    got = [r for part in reversed(inputs) for r in RECIPE.read("train", mini.files, part)]
    got = [resolved(r)["image"] for r in got]
    runs = [mini.records["train"][i:i + 16] for i in range(0, 205, 16)]
    want = [r["image"] for run in reversed(runs) for r in run]
    assert got == want


# -- malformed input -------------------------------------------------------------------------------


def test_image_missing_from_the_tar_is_a_bad_record_in_its_place(mini: Miniature) -> None:
    members = read_tar(mini.files[IMAGES])
    gone = records("validation", mini.files)[2]["__where__"].split(":", 1)[1]
    del members[gone]
    tar_of(mini.files[IMAGES], members)
    got = records("validation", mini.files)
    assert isinstance(got[2], BadRecord) and got[2].source == IMAGES and gone in got[2].where
    assert f"{VAL} line 3" in got[2].where and "missing" in got[2].problem
    assert [r["image"] for i, r in enumerate(got) if i != 2] == \
        [r["image"] for i, r in enumerate(mini.records["validation"]) if i != 2]


def test_member_that_is_not_a_jpeg_is_a_bad_record(mini: Miniature) -> None:
    members = read_tar(mini.files[IMAGES])
    target = records("validation", mini.files)[0]["__where__"].split(":", 1)[1]
    members[target] = b"<html>quota exceeded</html>"
    tar_of(mini.files[IMAGES], members)
    got = records("validation", mini.files)
    assert isinstance(got[0], BadRecord) and target in got[0].where and "not a JPEG" in got[0].problem


@pytest.mark.parametrize(("line", "words"), [
    ("a/abbey/x.jpg", "is not '<image path> <label>'"),
    ("a/abbey/x.jpg 205", "label '205' is not an integer in 0..204"),
    ("a/abbey/x.jpg -1", "label '-1'"),
    ("abbey.jpg 0", "is not <letter>/<category>/<file>"),
])
def test_bad_list_lines_are_bad_records_naming_the_line(mini: Miniature, line: str, words: str) -> None:
    val = read_tar(mini.files[LISTS])[VAL].decode().splitlines()
    val.insert(1, line)
    files = with_lists(mini, read_tar(mini.files[LISTS])[TRAIN].decode(), "\n".join(val) + "\n")
    got = records("validation", files)
    assert len(got) == len(val)
    bad = got[1]
    assert isinstance(bad, BadRecord) and bad.source == LISTS and bad.where == f"{VAL} line 2"
    assert words in bad.problem
    assert not any(isinstance(r, BadRecord) for i, r in enumerate(got) if i != 1)


def test_a_label_with_two_folder_names_is_named(mini: Miniature) -> None:
    train = read_tar(mini.files[LISTS])[TRAIN].decode() + "a/alley/extra.jpg 0\n"
    files = with_lists(mini, train)
    with pytest.raises(MalformedDataError, match=f"{TRAIN} line 206\\).*label 0 is 'alley' here but 'abbey'"):
        RECIPE.with_files(files)


def test_a_label_without_images_leaves_its_name_unknown(mini: Miniature) -> None:
    lines = [line for line in read_tar(mini.files[LISTS])[TRAIN].decode().splitlines() if not line.endswith(" 7")]
    with pytest.raises(MalformedDataError, match="no image of label 7"):
        RECIPE.with_files(with_lists(mini, "\n".join(lines)))


def test_a_list_that_is_not_text_is_named(mini: Miniature) -> None:
    files = with_lists(mini, "a/abbey/x.jpg 0\n", "a/abbey/\xe9.jpg 0\n".encode("latin-1").decode("latin-1"))
    tar_of(files[LISTS], {TRAIN: b"a/abbey/x.jpg 0\n", VAL: b"a/abbey/\xe9.jpg 0\n"}, "w:gz")
    with pytest.raises(MalformedDataError, match=f"{VAL} line 1\\): not ASCII"):
        RECIPE.inputs("validation", files)


def gzipped(mini: Miniature, path: Path) -> Path:
    """The miniature's image tar as the form gives it: gzip'd (by the gzip module, not the recipe's helpers)."""
    path.write_bytes(gzip.compress(mini.files[IMAGES].read_bytes(), mtime=0))
    return path


def test_the_published_gzip_tar_is_one_input_with_the_same_records(mini: Miniature, tmp_path: Path) -> None:
    files = {LISTS: mini.files[LISTS], IMAGES_GZ: gzipped(mini, tmp_path / IMAGES_GZ)}
    for split in RECIPE.split_names:
        assert RECIPE.inputs(split, files) is None  # a single stream: records() reads it in one pass
        got = records(split, files)
        plain = records(split, mini.files)
        assert [{k: v for k, v in r.items() if k != "__where__"} for r in got] == mini.records[split]
        assert [r["__where__"] for r in got] == [r["__where__"].replace(IMAGES, IMAGES_GZ) for r in plain]
        assert all(r["__where__"].startswith(f"{IMAGES_GZ}:{IMAGE_ROOT}") for r in got)


def test_an_image_missing_from_the_gzip_tar_is_a_bad_record_in_its_place(mini: Miniature, tmp_path: Path) -> None:
    members = read_tar(mini.files[IMAGES])
    gone = sorted(members)[3]
    del members[gone]
    tar_of(mini.files[IMAGES], members)
    files = {LISTS: mini.files[LISTS], IMAGES_GZ: gzipped(mini, tmp_path / IMAGES_GZ)}
    got = records("train", files)
    assert len(got) == len(mini.records["train"])
    (bad,) = [r for r in got if isinstance(r, BadRecord)]
    assert bad.source == IMAGES_GZ and gone in bad.where and "missing from the tar" in bad.problem


def test_a_split_list_missing_from_its_archive_is_named(mini: Miniature) -> None:
    tar_of(mini.files[LISTS], {TRAIN: b"a/abbey/x.jpg 0\n"}, "w:gz")
    with pytest.raises(MalformedDataError, match="val_places205.csv"):
        RECIPE.inputs("validation", mini.files)


# -- published facts and the manual download -----------------------------------------------------------


def test_published_facts_and_the_one_screen_instructions(tmp_path: Path) -> None:
    lists, images = RECIPE.sources
    assert lists.urls == ("http://data.csail.mit.edu/places/places205/trainvalsplit_places205.tar.gz",)
    assert not lists.manual and images.manual and images.filename == "imagesPlaces205_resize.tar"
    for source in RECIPE.sources:
        assert (source.size, source.sha256, source.md5) == (None, None, None)
        assert source.checksum_source.startswith("none published")
    assert [(s.name, s.num_records) for s in RECIPE.splits] == [("train", 2448873), ("validation", 20500)]
    assert RECIPE.refines_schema and RECIPE.default_codec == "datum"
    image, label = RECIPE.schema
    assert (image.encoding, label.minimum, label.maximum) == ("jpeg", 0, 204)
    screen = manual_instructions(RECIPE, tmp_path / "downloads")
    assert len(screen.splitlines()) <= 20 and max(len(line) for line in screen.splitlines()) <= 120
    for words in ("http://places.csail.mit.edu/downloadData.html", "gunzip imagesPlaces205_resize.tar.gz",
                  "imagesPlaces205_resize.tar  no checksum published", str(tmp_path / "downloads")):
        assert words in screen, screen
    with pytest.raises(ManualDownloadRequired) as caught:  # before any download: nothing is fetched
        thresher.prepare("places205", root=tmp_path / "out", progress=False)
    assert str(caught.value).startswith("Places205 (MIT Places, 205 scene categories) must be downloaded by hand.")
    assert "gunzip imagesPlaces205_resize.tar.gz" in str(caught.value)
    assert not list((tmp_path / "out").rglob("*.tar*"))


# -- end to end through the loopback server --------------------------------------------------------


served = served_fixture("places205")


@pytest.mark.parametrize(("fmt", "codec"), FORMAT_CODECS)
def test_places205_round_trips_through_the_mirror(fmt: str, codec: str | None, served, tmp_path: Path) -> None:
    manifest = served.round_trip(tmp_path, fmt, codec, datum_splits=())
    names = tuple(places205.miniature_class_names())
    assert manifest.schema["label"].names == names  # named from the split lists, kept in the manifest
    with thresher.open(tmp_path / "places205" / fmt / "validation") as ds:
        assert ds.schema["label"].names == names


@pytest.mark.parametrize("placed", [[IMAGES_GZ], [IMAGES_GZ, IMAGES]], ids=["gzip", "both"])
def test_the_images_as_placed_by_hand_convert_to_the_same_records(placed: list[str], served, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The form's .tar.gz placed as downloaded converts (one stream); with the plain tar there too, the plain
    tar is used (inputs read by the workers). Either way the records are the mirror run's."""
    from thresher.cli import main

    monkeypatch.setattr(places205, "LINES_PER_INPUT", 20)
    downloads = tmp_path / "placed" / "places205" / "downloads"
    downloads.mkdir(parents=True)
    gzipped(served.miniature, downloads / IMAGES_GZ)
    if IMAGES in placed:
        (downloads / IMAGES).write_bytes(served.miniature.files[IMAGES].read_bytes())
    manifest = served.prepare(tmp_path / "placed", workers=2, shard_size=8000)
    used = IMAGES if IMAGES in placed else IMAGES_GZ
    assert sorted(source["filename"] for source in manifest.sources) == sorted([LISTS, used])
    for split in RECIPE.split_names:
        with thresher.open(manifest.directory / split, decode=False) as ds:
            assert [ds[i] for i in range(len(ds))] == served.miniature.records[split]
    assert served.prepare(tmp_path / "placed", workers=2, shard_size=8000).run.already_done
    assert main(["checksums", "places205", "--root", str(tmp_path / "placed")]) == 0  # hashes the form placed
    assert sorted(line.split("\t")[0] for line in capsys.readouterr().out.splitlines()[1:]) == sorted([LISTS, used])


def test_two_workers_reading_their_own_lines_give_the_same_bytes(served, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs (runs of list lines with their images' extents) handed to worker processes."""
    monkeypatch.setattr(places205, "LINES_PER_INPUT", 20)
    served.assert_workers_agree(tmp_path, shard_size=8000)
