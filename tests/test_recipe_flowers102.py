"""Oxford 102 Flowers recipe: the miniature converts exactly, published facts, malformed input named."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thresher.conversion.convert import validate
from thresher.errors import MalformedDataError
from thresher.recipe import BadRecord, Input, Miniature, Record
from thresher.recipes.flowers102 import IMAGES, LABELS, RECIPE, SETID, member_name
from thresher.sources.archive import CorruptArchiveError, iter_tar
from thresher.sources.extent import Extent, resolved
from thresher.sources.matlab import save_mat

sio = pytest.importorskip("scipy.io")


@pytest.fixture
def mini(tmp_path: Path) -> Miniature:
    return RECIPE.write_miniature(tmp_path)


def read_tar(path: Path) -> dict[str, bytes]:
    return {m.name: m.read() for m in iter_tar(path)}


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def records(split: str, files: Mapping[str, Path]) -> list[Record | BadRecord]:
    """The recipe's records with their image bytes read (the recipe leaves them in the tar)."""
    return [r if isinstance(r, BadRecord) else resolved(r) for r in RECIPE.records(split, files)]


def read_inputs(split: str, files: Mapping[str, Path]) -> list[Record | BadRecord]:
    """The records read input by input, each input through pickle as a worker or Dask task gets it."""
    parts = RECIPE.inputs(split, files)
    assert parts is not None
    got = []
    for part in parts:
        items = list(RECIPE.read(split, files, pickle.loads(pickle.dumps(part))))
        assert len(items) == part.records == 1
        got += [r if isinstance(r, BadRecord) else resolved(r) for r in items]
    return got


def mat_vars(path: Path) -> dict[str, np.ndarray]:
    """The variables as MATLAB sees them (class double), not as stored (compact uint8)."""
    return {k: v for k, v in sio.loadmat(path, mat_dtype=True).items() if not k.startswith("__")}


# -- the miniature converts exactly ----------------------------------------------------------------


def test_miniature_records_match_exactly(mini: Miniature) -> None:
    assert set(mini.records) == {"train", "validation", "test"}
    for split in RECIPE.split_names:
        assert all(isinstance(r["image"], Extent) for r in RECIPE.records(split, mini.files))  # read by workers
        got = records(split, mini.files)
        expected = mini.records[split]
        assert len(got) == len(expected) > 0
        for record, want in zip(got, expected, strict=True):
            assert not isinstance(record, BadRecord), record
            assert isinstance(record["image"], bytes) and record["image"] == want["image"]
            assert type(record["label"]) is int and record["label"] == want["label"]
            assert record["__where__"].startswith(f"{IMAGES}:jpg/image_")
            assert validate(dict(record), RECIPE.schema, record["__where__"]) is None


def test_each_photo_is_an_independent_input_located_by_one_walk(mini: Miniature) -> None:
    order = {split: [int(i) for i in mat_vars(mini.files[SETID])[variable].ravel()]
             for split, variable in (("train", "trnid"), ("validation", "valid"), ("test", "tstid"))}
    for split in RECIPE.split_names:
        parts = RECIPE.inputs(split, mini.files)
        assert parts is not None and all(isinstance(p, Input) for p in parts)
        assert [p.name for p in parts] == [member_name(i) for i in order[split]]
        for part in parts:  # where the JPEG lies, not its bytes: small to send to a worker
            assert isinstance(part.where.image, Extent) and part.where.segmentation is None
            assert len(pickle.dumps(part)) < 600
        got = read_inputs(split, mini.files)
        assert got == records(split, mini.files)
        assert [(r["image"], r["label"]) for r in got] == [(r["image"], r["label"]) for r in mini.records[split]]


def test_records_follow_setid_order_and_label_is_matlab_minus_one(mini: Miniature) -> None:
    labels = mat_vars(mini.files[LABELS])["labels"].ravel()
    ids = mat_vars(mini.files[SETID])
    members = read_tar(mini.files[IMAGES])
    for split, variable in (("train", "trnid"), ("validation", "valid"), ("test", "tstid")):
        order = [int(i) for i in ids[variable].ravel()]
        assert order != sorted(order), "miniature ids should not be in tar order"
        got = records(split, mini.files)
        assert [r["__where__"] for r in got] == [f"{IMAGES}:{member_name(i)}" for i in order]
        assert [r["image"] for r in got] == [members[member_name(i)] for i in order]
        assert [r["label"] for r in got] == [int(labels[i - 1]) - 1 for i in order]


def test_miniature_is_in_the_published_layout(mini: Miniature) -> None:
    head = mini.files[IMAGES].read_bytes()[:512]
    assert not head.startswith(b"\x1f\x8b") and head[257:262] == b"ustar"  # uncompressed, like the real one
    members = read_tar(mini.files[IMAGES])
    count = len(members)
    assert list(members) == [member_name(i) for i in range(1, count + 1)]
    modes, sizes = set(), set()
    for data in members.values():
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG"
        modes.add(image.mode)
        sizes.add(image.size)
    assert modes == {"RGB", "L"} and len(sizes) >= count - 1

    labels = mat_vars(mini.files[LABELS])
    assert set(labels) == {"labels"} and labels["labels"].shape == (1, count)
    assert labels["labels"].min() >= 1 and labels["labels"].max() <= 102
    ids = mat_vars(mini.files[SETID])
    assert set(ids) == {"trnid", "valid", "tstid"}
    everything = np.concatenate([v.ravel() for v in ids.values()])
    assert all(v.shape[0] == 1 for v in ids.values())
    assert sorted(everything.tolist()) == list(range(1, count + 1))


def test_scipy_reads_the_miniature_mat_files_with_the_same_values(mini: Miniature) -> None:
    labels = mat_vars(mini.files[LABELS])["labels"]
    assert labels.dtype == np.float64
    expected = {split: [r["label"] + 1 for r in mini.records[split]] for split in mini.records}
    ids = mat_vars(mini.files[SETID])
    for split, variable in (("train", "trnid"), ("validation", "valid"), ("test", "tstid")):
        assert ids[variable].dtype == np.float64
        assert [int(labels[0, int(i) - 1]) for i in ids[variable].ravel()] == expected[split]


# -- published facts -------------------------------------------------------------------------------


def test_published_metadata() -> None:
    base = "www.robots.ox.ac.uk/~vgg/data/flowers/102/"
    published = {
        "102flowers.tgz": (344862509, "52808999861908f626f3c1f4e79d11fa",
                           "2d01ecc807db462958cfe3d92f57a8c252b4abd240eb955770201e45f783b246"),
        "imagelabels.mat": (502, "e0620be6f572b9609742df49c70aed4d",
                            "4903e94206bac23bf772aadf06451916df56b58fc483a62db32a97b82656651d"),
        "setid.mat": (14989, "a5357ecc9cb78c4bef273ce3793fc85c",
                      "46b8678f91fd95d3c8f4feab80d271a6c834a1dd896fe29fd3e6ad9ce5c8dccd"),
    }
    assert [s.filename for s in RECIPE.sources] == list(published)
    for source in RECIPE.sources:
        size, md5, sha256 = published[source.filename]
        assert source.urls == (f"https://{base}{source.filename}", f"http://{base}{source.filename}")
        assert (source.size, source.md5, source.sha256) == (size, md5, sha256)
        assert "torchvision" in source.checksum_source and "TFDS" in source.checksum_source
        assert not source.manual
    assert RECIPE.download_size == 344862509 + 502 + 14989
    assert [(s.name, s.num_records) for s in RECIPE.splits] == [("train", 1020), ("validation", 1020),
                                                                  ("test", 6149)]
    image, label = RECIPE.schema
    assert (image.name, image.kind, image.encoding, image.shape) == ("image", "image", "jpeg", None)
    assert (label.name, label.kind, label.minimum, label.maximum, label.dims) == ("label", "int", 0, 101, (1,))
    assert RECIPE.channel_order == "BGR" and RECIPE.default_codec == "datum"
    assert RECIPE.homepage == "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
    assert RECIPE.license == "not stated by the publisher"
    assert "Nilsback" in RECIPE.citation and "Zisserman" in RECIPE.citation and "2008" in RECIPE.citation
    assert RECIPE.citation.count("{") == RECIPE.citation.count("}")


# -- malformed input -------------------------------------------------------------------------------


def with_labels(mini: Miniature, labels: np.ndarray) -> dict[str, Path]:
    path = mini.files[LABELS].parent / "broken" / LABELS
    path.parent.mkdir(exist_ok=True)
    save_mat(path, {"labels": labels})
    return {**mini.files, LABELS: path}


def original_labels(mini: Miniature) -> np.ndarray:
    return mat_vars(mini.files[LABELS])["labels"]


@pytest.mark.parametrize("value", [0, 103, 7.5])
def test_label_out_of_range_is_a_bad_record_naming_the_image(mini: Miniature, value: float) -> None:
    labels = original_labels(mini).copy()
    first = int(mat_vars(mini.files[SETID])["trnid"][0, 1])  # the second train record
    labels[0, first - 1] = value
    got = records("train", with_labels(mini, labels))
    assert len(got) == len(mini.records["train"])
    bad = got[1]
    assert isinstance(bad, BadRecord)
    assert bad.source == LABELS and f"image id {first}" in bad.where and member_name(first) in bad.where
    assert "1..102" in bad.problem
    assert f"{LABELS} (" in str(bad.error())
    assert [r["image"] for i, r in enumerate(got) if i != 1] == \
        [r["image"] for i, r in enumerate(mini.records["train"]) if i != 1]


def test_id_beyond_the_labels_is_a_bad_record(mini: Miniature) -> None:
    labels = original_labels(mini)[:, :-1]  # drop the last image's label
    last = labels.shape[1] + 1
    split = next(s for s, v in (("train", "trnid"), ("validation", "valid"), ("test", "tstid"))
                 if last in mat_vars(mini.files[SETID])[v])
    bad = [r for r in records(split, with_labels(mini, labels)) if isinstance(r, BadRecord)]
    assert len(bad) == 1 and f"image id {last}" in bad[0].where and "no label" in bad[0].problem


def test_image_missing_from_the_tar_is_a_bad_record_in_its_place(mini: Miniature) -> None:
    members = read_tar(mini.files[IMAGES])
    order = [int(i) for i in mat_vars(mini.files[SETID])["tstid"].ravel()]
    gone = order[2]
    del members[member_name(gone)]
    write_tar(mini.files[IMAGES], members)
    for got in (records("test", mini.files), read_inputs("test", mini.files)):
        assert len(got) == len(order)
        bad = got[2]
        assert isinstance(bad, BadRecord) and bad.source == IMAGES
        assert member_name(gone) in bad.where and f"image id {gone}" in bad.where and "missing" in bad.problem
        expected = mini.records["test"]
        for i in (0, 1, 3, 4, 5):
            assert got[i]["image"] == expected[i]["image"] and got[i]["label"] == expected[i]["label"]


def test_member_that_is_not_a_jpeg_is_a_bad_record(mini: Miniature) -> None:
    members = read_tar(mini.files[IMAGES])
    target = int(mat_vars(mini.files[SETID])["valid"][0, 0])
    members[member_name(target)] = b"<html>quota exceeded</html>"
    write_tar(mini.files[IMAGES], members)
    for got in (records("validation", mini.files), read_inputs("validation", mini.files)):
        assert isinstance(got[0], BadRecord) and got[0].where == member_name(target) and "JPEG" in got[0].problem
        assert not any(isinstance(r, BadRecord) for r in got[1:])


def test_duplicate_ids_in_a_split_are_all_yielded(mini: Miniature) -> None:
    ids = mat_vars(mini.files[SETID])
    ids["trnid"] = np.array([[5, 3, 5, 3, 12]], dtype=np.float64)
    save_mat(mini.files[SETID], ids)
    members = read_tar(mini.files[IMAGES])
    got = records("train", mini.files)
    assert [r["image"] for r in got] == [members[member_name(i)] for i in (5, 3, 5, 3, 12)]


@pytest.mark.parametrize(
    ("filename", "arrays", "words"),
    [
        (SETID, {"valid": np.ones((1, 3)), "tstid": np.ones((1, 3))}, ["setid.mat", "'trnid'", "missing"]),
        (SETID, {"trnid": np.ones((2, 3))}, ["setid.mat", "'trnid'", "(2, 3)"]),
        (SETID, {"trnid": np.array([[1.0, 2.5]])}, ["setid.mat", "'trnid' entry 1", "2.5"]),
        (SETID, {"trnid": np.array([[1.0, 0.0]])}, ["setid.mat", "'trnid' entry 1"]),
        (LABELS, {"label": np.ones((1, 12))}, ["imagelabels.mat", "'labels'", "missing"]),
        (LABELS, {"labels": np.ones((3, 4))}, ["imagelabels.mat", "'labels'", "(3, 4)"]),
    ],
)
def test_wrong_mat_file_is_malformed_data_naming_file_and_variable(
    mini: Miniature, filename: str, arrays: dict[str, np.ndarray], words: list[str]
) -> None:
    save_mat(mini.files[filename], arrays)
    with pytest.raises(MalformedDataError) as caught:
        records("train", mini.files)
    for word in words:
        assert word in str(caught.value)


def test_mat_file_that_is_not_a_mat_file_is_named(mini: Miniature) -> None:
    mini.files[SETID].write_bytes(b"<!DOCTYPE html><html>Not Found</html>" * 5)
    with pytest.raises(MalformedDataError, match="setid.mat"):
        records("test", mini.files)


def test_records_stream_before_the_tar_is_read_to_the_end(mini: Miniature) -> None:
    """The first record comes out as soon as its member is read, not after the whole pass."""
    members = read_tar(mini.files[IMAGES])
    first = int(mat_vars(mini.files[SETID])["valid"][0, 0])
    write_tar(mini.files[IMAGES], {member_name(first): members[member_name(first)], **members})
    data = mini.files[IMAGES].read_bytes()
    mini.files[IMAGES].write_bytes(data[: 512 + len(members[member_name(first)]) + 2048])  # truncated
    stream = RECIPE.records("validation", mini.files)
    assert resolved(next(stream))["image"] == mini.records["validation"][0]["image"]
    with pytest.raises(CorruptArchiveError):
        list(stream)


def test_a_truncated_tar_is_named_before_any_input_is_read(mini: Miniature) -> None:
    data = mini.files[IMAGES].read_bytes()
    mini.files[IMAGES].write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(CorruptArchiveError, match=IMAGES):
        RECIPE.inputs("test", mini.files)


def test_label_problems_are_inputs_holding_their_bad_record(mini: Miniature) -> None:
    labels = original_labels(mini).copy()
    first = int(mat_vars(mini.files[SETID])["trnid"][0, 0])
    labels[0, first - 1] = 0
    files = with_labels(mini, labels)
    parts = RECIPE.inputs("train", files)
    assert parts is not None and isinstance(parts[0].where, BadRecord) and parts[0].records == 1
    assert read_inputs("train", files) == records("train", files)


def test_locate_names_the_archive_and_split_list() -> None:
    assert RECIPE.locate("test", 7) == f"{IMAGES} image number 7 of {SETID} tstid"


def test_a_gzipped_tar_gives_the_same_records_as_bytes(mini: Miniature) -> None:
    """Only an uncompressed archive has extents; compressed, the recipe holds the bytes."""
    plain = mini.files[IMAGES].read_bytes()
    with gzip.open(mini.files[IMAGES], "wb") as f:
        f.write(plain)
    for split in RECIPE.split_names:
        assert RECIPE.inputs(split, mini.files) is None  # one compressed stream, read by records()
        got = list(RECIPE.records(split, mini.files))
        assert all(isinstance(r["image"], bytes) for r in got)
        assert [r["image"] for r in got] == [r["image"] for r in mini.records[split]]
