"""PASCAL VOC recipe: the miniature converts exactly in every format, real XML decodes, bad input is named."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from e2e import assert_same_records
from PIL import Image
from server import LoopbackServer

import thresher
from thresher.conversion.convert import validate
from thresher.errors import ChecksumError, MalformedDataError, UnsupportedCodecError
from thresher.miniature import write_checksums
from thresher.recipe import BadRecord, Miniature, Record
from thresher.recipes.voc import (
    CLASSES,
    DETECTION,
    RECIPE,
    SEGMENTATION,
    TEST_2007,
    TRAINVAL_2012,
    parse_annotation,
)
from thresher.sources.extent import Extent, resolved
from thresher.verify import verify

VOC2012 = RECIPE.with_variant("2012")
VOC2007 = RECIPE.with_variant("2007")
ROOT = "VOCdevkit/VOC2012/"

# VOC2007 Annotations/000001.xml exactly as published (tabs and all).
REAL_XML = (Path(__file__).parent / "recipe_fixtures" / "voc2007_000001.xml").read_bytes()


@pytest.fixture
def mini(tmp_path: Path) -> Miniature:
    return VOC2012.write_miniature(tmp_path)


def records(recipe: Any, split: str, files: Mapping[str, Path]) -> list[Record | BadRecord]:
    return [r if isinstance(r, BadRecord) else resolved(r) for r in recipe.records(split, files)]


def tar_members(path: Path) -> dict[str, bytes | None]:
    with tarfile.open(path) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar}  # type: ignore[union-attr]


def rewrite_tar(path: Path, change: Mapping[str, bytes | None]) -> None:
    """The tar with members replaced (bytes) or removed (None), written with tarfile, uncompressed."""
    members = tar_members(path)
    for name, data in change.items():
        if data is None:
            members.pop(name)
        else:
            members[name] = data
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


# -- the miniature reads back exactly --------------------------------------------------------------


@pytest.mark.parametrize("recipe", [VOC2012, VOC2007], ids=["2012", "2007"])
def test_miniature_records_match_exactly(recipe: Any, tmp_path: Path) -> None:
    mini = recipe.write_miniature(tmp_path)
    assert set(mini.records) == set(recipe.split_names)
    for split in recipe.split_names:
        inputs = recipe.inputs(split, mini.files)
        assert [part.records for part in inputs] == [1] * len(mini.records[split])
        assert all(isinstance(extent, Extent) for part in inputs for extent in part.where)  # workers read them
        got = records(recipe, split, mini.files)
        schema = recipe.split_schema(split)
        assert_same_records([{k: v for k, v in r.items() if k != "__where__"} for r in got],  # type: ignore[union-attr]
                            mini.records[split], schema, split)
        for record in got:
            assert validate(dict(record), schema, record["__where__"]) is None  # type: ignore[index]


def test_splits_schemas_and_sources_are_the_published_ones() -> None:
    assert RECIPE.key == "voc" and VOC2012.key == "voc/2012" and VOC2007.key == "voc/2007"
    assert RECIPE.variant_names == ("2012", "2007")
    counts = {s.name: s.num_records for s in VOC2012.splits}
    assert counts == {"train": 5717, "val": 5823, "trainval": 11540, "segmentation_train": 1464,
                      "segmentation_val": 1449}
    assert {s.name: s.num_records for s in VOC2007.splits} == {
        "train": 2501, "val": 2510, "trainval": 5011, "test": 4952, "segmentation_train": 209,
        "segmentation_val": 213, "segmentation_test": 210}
    assert VOC2012.split_schema("train") == DETECTION and VOC2012.split_schema("segmentation_val") == SEGMENTATION
    (trainval,) = VOC2012.sources
    assert trainval.filename == TRAINVAL_2012 and trainval.size == 1999639040
    assert trainval.md5 == "6cd6e144f989b92b3379bac3b3de84fd"
    assert trainval.sha256 == "e14f763270cf193d0b5f74b169f44157a4b0c6efa708f4dd0ff78ee691763bcb"
    assert trainval.urls[0] == "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
    assert "sources.md" not in trainval.checksum_source and "torchvision" in trainval.checksum_source
    assert [s.size for s in VOC2007.sources] == [460032000, 451020800]
    assert VOC2007.archive("segmentation_test") == TEST_2007 and not RECIPE.needs_manual_download
    assert len(CLASSES) == 20 and DETECTION["objects"].names == CLASSES  # type: ignore[attr-defined]


def test_real_annotation_decodes_to_its_published_boxes() -> None:
    objects = parse_annotation(REAL_XML, "000001.xml")
    assert not isinstance(objects, str)
    assert objects["boxes"].dtype == np.float32
    assert objects["boxes"].tolist() == [[48, 240, 195, 371], [8, 12, 352, 498]]
    assert [CLASSES[i] for i in objects["labels"]] == ["dog", "person"]
    assert objects["truncated"].tolist() == [True, True] and objects["difficult"].tolist() == [False, False]


def test_segmentation_pngs_keep_palette_indexes_and_the_published_colours(mini: Miniature) -> None:
    (record,) = records(VOC2012, "segmentation_val", mini.files)
    png = Image.open(io.BytesIO(record["segmentation_class"]))  # type: ignore[index]
    assert png.mode == "P"
    palette = png.getpalette()
    # The devkit's colour map as published: 1 aeroplane (128,0,0), 15 person (192,128,128), 255 (224,224,192).
    assert palette[3:6] == [128, 0, 0] and palette[45:48] == [192, 128, 128] and palette[765:768] == [224, 224, 192]
    indexes = np.asarray(png)
    assert 255 in indexes and 0 in indexes and set(np.unique(indexes)) <= {0, 255, *range(1, 21)}


# -- end to end through the loopback mirror, every format and codec ----------------------------------


@pytest.fixture(scope="module")
def voc_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoopbackServer, dict[str, Any]]]:
    """Both variants' miniatures under ``<mirror>/voc/``, served on 127.0.0.1."""
    root = tmp_path_factory.mktemp("voc-mirror")
    minis = {}
    (root / "files" / "voc").mkdir(parents=True)
    for recipe in (VOC2012, VOC2007):
        minis[recipe.variant] = mini = recipe.write_miniature((root / "files" / "voc").resolve())
        minis[f"{recipe.variant} checksums"] = write_checksums(mini.files, root / f"voc-{recipe.variant}.tsv")
    with LoopbackServer(root / "files", name="mirror") as server:
        yield server, minis


def prepare(key: str, server: LoopbackServer, sums: Path, root: Path, **kwargs: Any) -> thresher.Manifest:
    return thresher.prepare(key, root=root, mirror=server.url, offline=True, checksums=sums, progress=False, **kwargs)


@pytest.mark.parametrize(("fmt", "codec"), [("lmdb", "tensorprotos"), ("minidb", "tensorprotos"), ("hdf5", None)])
@pytest.mark.parametrize("year", ["2012", "2007"])
def test_every_split_reads_back_exactly(year: str, fmt: str, codec: str | None,
                                        voc_mirror: tuple[LoopbackServer, dict[str, Any]], tmp_path: Path) -> None:
    server, minis = voc_mirror
    recipe = RECIPE.with_variant(year)
    manifest = prepare(recipe.key, server, minis[f"{year} checksums"], tmp_path, format=fmt, codec=codec)
    assert verify(manifest.directory).ok
    for split in recipe.split_names:
        want, schema = minis[year].records[split], recipe.split_schema(split)
        with thresher.open(manifest.directory / split, decode=False) as ds:
            assert_same_records([ds[i] for i in range(len(ds))], want, schema, f"voc/{year}/{fmt}/{split}")
        with thresher.open(manifest.directory / split) as ds:  # decoded: pixels, and label maps as indexes
            for i, record in enumerate(want):
                assert ds[i]["image"].shape[:2] == Image.open(io.BytesIO(record["image"])).size[::-1]
                for field in schema.names[1:]:
                    if field != "objects":
                        indexes = np.asarray(Image.open(io.BytesIO(record[field])))
                        assert ds[i][field].dtype == np.uint8 and np.array_equal(ds[i][field], indexes)


def test_datum_refuses_the_detection_splits_clearly(voc_mirror: tuple[LoopbackServer, dict[str, Any]],
                                                     tmp_path: Path) -> None:
    server, minis = voc_mirror
    for splits in (["train"], None):  # the detection splits alone, or with the segmentation ones
        with pytest.raises(UnsupportedCodecError, match="objects.*tensorprotos or --format hdf5"):
            prepare("voc/2012", server, minis["2012 checksums"], tmp_path, format="lmdb", codec="datum", splits=splits)


def test_a_list_whose_count_differs_from_the_published_one_is_refused(
        voc_mirror: tuple[LoopbackServer, dict[str, Any]], tmp_path: Path) -> None:
    """2012's segmentation train has a published count (1,464); the miniature's list holds fewer.

    Files accepted as they are (``thresher checksums --update``) are refused before converting,
    naming the tar, the list and both counts; with ``--checksums`` (the user's own files) the
    difference is a warning. Segmentation val has no published count: no warning.
    """
    from thresher.cli import main

    server, minis = voc_mirror
    found = len(minis["2012"].records["segmentation_train"])
    data = tmp_path / "data"
    common: dict[str, Any] = {"root": data, "mirror": server.url, "offline": True, "progress": False}
    with pytest.raises(ChecksumError):  # not the published files
        thresher.prepare("voc/2012", splits=["segmentation_train"], **common)
    assert main(["checksums", "voc/2012", "--root", str(data), "--update"]) == 0  # accepted as they are
    listing = "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt"
    with pytest.raises(MalformedDataError, match=rf"^{TRAINVAL_2012} \(member '{listing}'\): {found} image ids where "
                                                 r"the publisher says 1,464 for segmentation_train; .*--checksums FILE"):
        thresher.prepare("voc/2012", splits=["segmentation_train"], **common)
    assert not list(data.rglob("shard-*"))

    manifest = thresher.prepare("voc/2012", splits=["segmentation_train", "segmentation_val"],
                                checksums=minis["2012 checksums"], **common)
    assert manifest.splits["segmentation_train"].warnings == [
        f"{TRAINVAL_2012}: {found} image ids where the publisher says 1,464 for segmentation_train "
        "(--checksums overrides the published files)"]
    assert manifest.splits["segmentation_val"].warnings == []
    assert manifest.splits["segmentation_train"].records == found


def test_only_published_counts_are_stated(mini: Miniature) -> None:
    assert [c.found for c in VOC2012.stated_counts("segmentation_train", mini.files)] == [
        len(mini.records["segmentation_train"])]
    for split in ("train", "val", "trainval", "segmentation_val"):
        assert VOC2012.stated_counts(split, mini.files) == []


# -- malformed input: one test per kind, each named ----------------------------------------------------


def bad_one(mini: Miniature, split: str, member: str, data: bytes | None) -> BadRecord:
    """Replace (or remove) one member and return the one BadRecord the split then yields."""
    rewrite_tar(mini.files[TRAINVAL_2012], {ROOT + member: data})
    got = records(VOC2012, split, mini.files)
    assert len(got) == len(mini.records[split])
    bad = [r for r in got if isinstance(r, BadRecord)]
    assert len(bad) == 1, bad
    assert bad[0].source == TRAINVAL_2012
    return bad[0]


def first_id(mini: Miniature, split: str) -> str:
    listing = "ImageSets/Segmentation/" if split.startswith("segmentation_") else "ImageSets/Main/"
    text = tar_members(mini.files[TRAINVAL_2012])[ROOT + listing + split.removeprefix("segmentation_") + ".txt"]
    return text.split()[0].decode()  # type: ignore[union-attr]


def annotation(mini: Miniature) -> tuple[str, str]:
    image_id = first_id(mini, "train")
    xml = tar_members(mini.files[TRAINVAL_2012])[f"{ROOT}Annotations/{image_id}.xml"]
    return f"Annotations/{image_id}.xml", xml.decode()  # type: ignore[union-attr]


def test_image_missing_from_the_tar_is_a_bad_record_in_its_place(mini: Miniature) -> None:
    image_id = first_id(mini, "train")
    bad = bad_one(mini, "train", f"JPEGImages/{image_id}.jpg", None)
    assert bad.where == f"{ROOT}JPEGImages/{image_id}.jpg" and "missing from the archive" in bad.problem


def test_annotation_missing_from_the_tar_is_a_bad_record(mini: Miniature) -> None:
    member, _ = annotation(mini)
    assert bad_one(mini, "train", member, None).where == ROOT + member


def test_member_that_is_not_a_jpeg_is_a_bad_record(mini: Miniature) -> None:
    image_id = first_id(mini, "train")
    bad = bad_one(mini, "train", f"JPEGImages/{image_id}.jpg", b"GIF89a....")
    assert "not a JPEG" in bad.problem and "47 49 46" in bad.problem


def test_label_map_that_is_not_a_png_is_a_bad_record(mini: Miniature) -> None:
    image_id = first_id(mini, "segmentation_train")
    bad = bad_one(mini, "segmentation_train", f"SegmentationObject/{image_id}.png", b"\xff\xd8\xff\xe0 a JPEG")
    assert bad.where == f"{ROOT}SegmentationObject/{image_id}.png" and "not a PNG" in bad.problem


@pytest.mark.parametrize(("old", "new", "problem"), [
    ("</annotation>", "", "not well-formed XML"),
    ("<name>", "<name>zebra", "class 'zebra"),
    ("<xmin>", "<xmin>left", "bndbox/xmin 'left"),
    ("<ymax>", "<ymax>-", "has a max below its min"),
    ("<truncated>", "<truncated>2", "truncated is '2"),
    ("<bndbox>", "<box>", "not well-formed XML"),
])
def test_malformed_annotation_is_a_bad_record_naming_the_object(mini: Miniature, old: str, new: str,
                                                                 problem: str) -> None:
    member, xml = annotation(mini)
    assert old in xml
    bad = bad_one(mini, "train", member, xml.replace(old, new, 1).encode())
    assert bad.where == ROOT + member and problem in bad.problem, bad


def test_object_without_a_box_is_a_bad_record(mini: Miniature) -> None:
    member, xml = annotation(mini)
    start, end = xml.index("\t\t<bndbox>"), xml.index("</bndbox>\n") + len("</bndbox>\n")
    bad = bad_one(mini, "train", member, (xml[:start] + xml[end:]).encode())
    assert "object 1" in bad.problem and "has no bndbox" in bad.problem


def test_missing_list_file_is_malformed_data_naming_tar_and_member(mini: Miniature) -> None:
    rewrite_tar(mini.files[TRAINVAL_2012], {ROOT + "ImageSets/Main/val.txt": None})
    with pytest.raises(MalformedDataError, match=r"VOCtrainval_11-May-2012\.tar.*ImageSets/Main/val\.txt.*missing"):
        VOC2012.inputs("val", mini.files)


def test_list_file_with_a_line_that_is_no_image_id_names_the_line(mini: Miniature) -> None:
    rewrite_tar(mini.files[TRAINVAL_2012], {ROOT + "ImageSets/Main/val.txt": b"2008_000033\n2008 000042 -1\n"})
    with pytest.raises(MalformedDataError, match=r"ImageSets/Main/val\.txt.*line 2.*not an image id"):
        VOC2012.inputs("val", mini.files)


def test_locate_names_the_tar_and_the_list() -> None:
    assert VOC2012.locate("segmentation_val", 3) == f"{TRAINVAL_2012} image number 3 of ImageSets/Segmentation/val.txt"
    assert VOC2007.locate("test", 0).startswith(TEST_2007)


def test_catalog_lists_the_segmentation_fields_beside_the_detection_ones() -> None:
    from thresher.catalog import render

    text = render()
    assert "| `voc/2012` | 2012 (default), 2007 |" in text and "| `voc/2007` |" in text
    assert "Fields of `voc/2012` split `segmentation_train`:" in text
    assert "* segmentation_class: mask, encoded png, 21 classes" in text
