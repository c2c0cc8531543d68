"""flowers102/segmented: the published segmentations as an optional mask, and flowers102 left as it was."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from e2e import FORMAT_CODECS
from server import LoopbackServer

import thresher
from thresher.errors import CorruptArchiveError, MalformedDataError, UnsupportedCodecError
from thresher.features import Mask
from thresher.miniature import write_checksums
from thresher.recipe import BadRecord, Miniature, Record
from thresher.recipes.flowers102 import (
    IMAGES,
    SEGMENTATIONS,
    SETID,
    flower_mask,
    member_name,
    segmentation_name,
)
from thresher.registry import get_recipe
from thresher.sources.extent import Extent, resolved

RECIPE = get_recipe("flowers102/segmented")
PLAIN = get_recipe("flowers102")
sio = pytest.importorskip("scipy.io")


@pytest.fixture
def mini(tmp_path: Path) -> Miniature:
    return RECIPE.write_miniature(tmp_path)


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def rewrite(path: Path, changed: Mapping[str, bytes | None], *, compress: bool = True) -> None:
    """The segmentations' tar with members replaced (bytes) or removed (None), written with tarfile."""
    kept = {name: changed.get(name, data) for name, data in members(path).items()}
    with tarfile.open(path, "w:gz" if compress else "w") as tar:
        for name, data in kept.items():
            if data is not None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def records(split: str, files: Mapping[str, Path]) -> list[Record | BadRecord]:
    return [r if isinstance(r, BadRecord) else resolved(r) for r in RECIPE.records(split, files)]


def png_indexes(data: bytes) -> np.ndarray:
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.mode == "L"
    return np.asarray(image)


def split_ids(mini: Miniature, variable: str) -> list[int]:
    return [int(i) for i in sio.loadmat(mini.files[SETID])[variable].ravel()]


def jpeg(pixels: np.ndarray, **options: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buffer, "JPEG", **options)
    return buffer.getvalue()


# -- the plain edition stays as it was; the variant adds a download and a field ---------------------


def test_plain_name_is_the_classification_edition_without_the_segmentations() -> None:
    assert (PLAIN.key, PLAIN.variant, PLAIN.schema.names) == ("flowers102", None, ("image", "label"))
    assert SEGMENTATIONS not in [s.filename for s in PLAIN.sources]
    assert [e.key for e in PLAIN.editions()] == ["flowers102", "flowers102/segmented"]
    assert RECIPE.key == "flowers102/segmented" and RECIPE.version == PLAIN.version


def test_segmented_sources_and_schema() -> None:
    assert RECIPE.sources[:3] == PLAIN.sources
    source = RECIPE.source(SEGMENTATIONS)
    base = "www.robots.ox.ac.uk/~vgg/data/flowers/102/"
    assert source.urls == (f"https://{base}{SEGMENTATIONS}", f"http://{base}{SEGMENTATIONS}")
    # Nothing published: no invented size or checksum, the first download's sha256 is recorded.
    assert (source.size, source.md5, source.sha256, source.checksum_source) == (None, None, None, "none published")
    assert RECIPE.download_size is None and not RECIPE.needs_manual_download
    assert RECIPE.schema.names == ("image", "label", "mask")
    mask = RECIPE.schema["mask"]
    assert isinstance(mask, Mask) and mask.encoding == "png" and mask.names == ("background", "flower")
    assert mask.resample == "nearest"
    assert RECIPE.default_codec == "tensorprotos"
    assert RECIPE.splits == PLAIN.splits


# -- the rule that turns a segmentation into a mask ----------------------------------------------


def test_blue_rule_on_hand_picked_pixels() -> None:
    pixels = np.array([[
        (0, 0, 255), (0, 0, 254), (64, 64, 191), (12, 30, 230),  # the painted background, with JPEG noise
        (65, 0, 255), (0, 65, 255), (0, 0, 190),                 # just outside the tolerance
        (100, 149, 237), (70, 40, 160), (255, 255, 255), (0, 0, 0), (250, 200, 20),  # flowers, blue ones too
    ]], dtype=np.uint8)
    assert flower_mask(pixels).tolist() == [[0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]]
    assert flower_mask(pixels).dtype == np.uint8


def test_blue_rule_on_a_hand_made_jpeg_with_a_blue_background() -> None:
    """An ordinary JPEG (quality 75, 4:2:0): every pixel 8 or more away from the edge is exactly right."""
    from PIL import Image

    height, width = 96, 128
    rows, columns = np.mgrid[0:height, 0:width]
    flower = (rows >= 24) & (rows < 72) & (columns >= 32) & (columns < 96)
    rng = np.random.default_rng(5)
    petals = np.stack([180 + rng.integers(-30, 30, (height, width)), 60 + columns // 4,
                       90 + rng.integers(-40, 40, (height, width))], axis=-1)
    petals[:, 64:] = (90, 120, 230)  # the right half of the flower is blue itself (a cornflower)
    pixels = np.where(flower[..., None], petals, np.array([0, 0, 255]))
    decoded = np.asarray(Image.open(io.BytesIO(jpeg(pixels, quality=75))).convert("RGB"))
    assert np.abs(decoded.astype(int) - pixels).max() > 0, "the JPEG should have changed some pixels"
    away = np.ones_like(flower)
    for dy in range(-8, 9):
        for dx in range(-8, 9):
            away &= np.roll(flower, (dy, dx), axis=(0, 1)) == flower
    assert away.sum() > height * width // 2
    got = flower_mask(decoded)
    np.testing.assert_array_equal(got[away], flower[away].astype(np.uint8))


# -- the miniature converts exactly ----------------------------------------------------------------


def test_miniature_records_have_the_drawn_masks(mini: Miniature) -> None:
    assert set(mini.files) == {IMAGES, SETID, "imagelabels.mat", SEGMENTATIONS}
    assert mini.files[SEGMENTATIONS].read_bytes()[:2] == b"\x1f\x8b"  # gzipped, as its name says
    for split in RECIPE.split_names:
        assert RECIPE.inputs(split, mini.files) is None  # a gzipped tar is one stream
        got = records(split, mini.files)
        want = mini.records[split]
        assert len(got) == len(want) > 0
        for record, expected in zip(got, want, strict=True):
            assert not isinstance(record, BadRecord), record
            assert record["image"] == expected["image"] and record["label"] == expected["label"]
            assert record["mask"] == expected["mask"]
            assert png_indexes(record["mask"]).shape[::-1] == _size(record["image"])
            values = set(np.unique(png_indexes(record["mask"])).tolist())
            assert values <= {0, 1} and 1 in values


def _size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(data)).size


def test_miniature_segmentations_are_blue_painted_photos(mini: Miniature) -> None:
    from PIL import Image

    segmentations = members(mini.files[SEGMENTATIONS])
    photos = members(mini.files[IMAGES])
    assert sorted(segmentations) == [segmentation_name(i) for i in range(1, len(photos) + 1)]
    for image_id in range(1, len(photos) + 1):
        segmentation = Image.open(io.BytesIO(segmentations[segmentation_name(image_id)]))
        assert segmentation.format == "JPEG" and segmentation.mode == "RGB"
        assert segmentation.size == Image.open(io.BytesIO(photos[member_name(image_id)])).size


def test_an_uncompressed_segmentation_tar_gives_independent_inputs(mini: Miniature) -> None:
    with gzip.open(mini.files[SEGMENTATIONS]) as f:
        plain = f.read()
    mini.files[SEGMENTATIONS].write_bytes(plain)
    for split in RECIPE.split_names:
        parts = RECIPE.inputs(split, mini.files)
        assert parts is not None and all(p.records == 1 for p in parts)
        assert all(isinstance(p.where.image, Extent) and isinstance(p.where.segmentation, Extent) for p in parts)
        got = [resolved(r) for p in parts for r in RECIPE.read(split, mini.files, p)]
        assert got == records(split, mini.files)
        assert [r["mask"] for r in got] == [r["mask"] for r in mini.records[split]]


# -- malformed segmentations -----------------------------------------------------------------------


def test_image_without_its_segmentation_is_a_bad_record_naming_it(mini: Miniature) -> None:
    gone = split_ids(mini, "tstid")[1]
    rewrite(mini.files[SEGMENTATIONS], {segmentation_name(gone): None})
    got = records("test", mini.files)
    assert len(got) == len(mini.records["test"])
    bad = got[1]
    assert isinstance(bad, BadRecord) and bad.source == SEGMENTATIONS
    assert bad.where == f"{segmentation_name(gone)} (image id {gone})" and "missing" in bad.problem
    assert f"{SEGMENTATIONS} ({segmentation_name(gone)}" in str(bad.error())
    assert [r["mask"] for i, r in enumerate(got) if i != 1] == \
        [r["mask"] for i, r in enumerate(mini.records["test"]) if i != 1]


@pytest.mark.parametrize(("data", "words"), [
    (b"<html>quota exceeded</html>", "not a JPEG file (starts with 3c 68"),
    (b"", "not a JPEG file (starts with nothing)"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "cannot be decoded as a JPEG"),
])
def test_segmentation_that_is_not_a_whole_jpeg_is_a_bad_record(mini: Miniature, data: bytes, words: str) -> None:
    target = split_ids(mini, "valid")[0]
    rewrite(mini.files[SEGMENTATIONS], {segmentation_name(target): data})
    got = records("validation", mini.files)
    assert isinstance(got[0], BadRecord) and got[0].source == SEGMENTATIONS
    assert got[0].where == segmentation_name(target) and words in got[0].problem
    assert not any(isinstance(r, BadRecord) for r in got[1:])


def test_truncated_segmentation_jpeg_is_a_bad_record(mini: Miniature) -> None:
    target = split_ids(mini, "trnid")[2]
    whole = members(mini.files[SEGMENTATIONS])[segmentation_name(target)]
    rewrite(mini.files[SEGMENTATIONS], {segmentation_name(target): whole[: len(whole) // 2]})
    bad = records("train", mini.files)[2]
    assert isinstance(bad, BadRecord) and bad.where == segmentation_name(target)
    assert "cannot be decoded as a JPEG" in bad.problem and "truncated" in bad.problem


def test_segmentation_of_another_size_than_its_photo_is_a_bad_record(mini: Miniature) -> None:
    target = split_ids(mini, "trnid")[0]
    rewrite(mini.files[SEGMENTATIONS], {segmentation_name(target): jpeg(np.zeros((3, 4, 3)))})
    bad = records("train", mini.files)[0]
    width, height = _size(members(mini.files[IMAGES])[member_name(target)])
    assert isinstance(bad, BadRecord) and bad.source == SEGMENTATIONS and bad.where == segmentation_name(target)
    assert bad.problem == f"is 4x3 pixels but its photo {member_name(target)} is {width}x{height}"


def test_segmentations_file_that_is_not_an_archive_is_named(mini: Miniature) -> None:
    mini.files[SEGMENTATIONS].write_bytes(b"<!DOCTYPE html><html>Not Found</html>" * 20)
    with pytest.raises(MalformedDataError, match=f"{SEGMENTATIONS}.*not an archive"):
        records("train", mini.files)


def test_truncated_segmentations_archive_is_named(mini: Miniature) -> None:
    data = mini.files[SEGMENTATIONS].read_bytes()
    mini.files[SEGMENTATIONS].write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptArchiveError, match=SEGMENTATIONS):
        records("test", mini.files)


# -- end to end, over HTTP, in every format --------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> tuple[Miniature, Path, Path]:
    """The variant's miniature as ``<www>/flowers102/<file>``, and a --checksums file for its four files."""
    folder = tmp_path / "www" / "flowers102"
    folder.mkdir(parents=True)
    miniature = RECIPE.write_miniature(folder)
    return miniature, tmp_path / "www", write_checksums(miniature.files, tmp_path / "sums.tsv")


@pytest.mark.parametrize(("fmt", "codec"), FORMAT_CODECS)
def test_segmented_round_trips_exactly_in_every_format(served: tuple[Miniature, Path, Path], tmp_path: Path,
                                                       fmt: str, codec: str | None) -> None:
    miniature, www, checksums = served
    with LoopbackServer(www, name="mirror") as srv:
        common = {"root": tmp_path / "root", "format": fmt, "codec": codec, "mirror": srv.url, "offline": True,
                  "checksums": checksums, "progress": False}
        if codec == "datum":  # three fields: not an image and a label
            with pytest.raises(UnsupportedCodecError, match="tensorprotos"):
                thresher.prepare("flowers102/segmented", **common)
            return
        manifest = thresher.prepare("flowers102/segmented", **common)
    assert manifest.recipe == "flowers102/segmented"
    for split in RECIPE.split_names:
        want = miniature.records[split]
        assert manifest.splits[split].records == len(want)
        stored = thresher.open(tmp_path / "root" / "flowers102" / "segmented" / fmt / split, decode=False)
        decoded = thresher.open(tmp_path / "root" / "flowers102" / "segmented" / fmt / split)
        assert len(stored) == len(want)
        for i, expected in enumerate(want):
            got = stored[i]
            assert set(got) == {"image", "label", "mask"}
            assert got["image"] == expected["image"] and got["label"] == expected["label"]
            np.testing.assert_array_equal(png_indexes(got["mask"]), png_indexes(expected["mask"]))
            mask = decoded[i]["mask"]
            assert mask.dtype == np.uint8 and mask.shape[::-1] == _size(expected["image"])
            np.testing.assert_array_equal(mask, png_indexes(expected["mask"]))
        stored.close()
        decoded.close()


def test_editions_share_one_downloads_folder(served: tuple[Miniature, Path, Path], tmp_path: Path) -> None:
    """Classification first, then the masks: only the segmentations are downloaded the second time."""
    _, www, checksums = served
    root = tmp_path / "root"
    with LoopbackServer(www, name="mirror") as srv:
        common = {"root": root, "mirror": srv.url, "offline": True, "checksums": checksums, "progress": False}
        thresher.prepare("flowers102", format="minidb", **common)
        first = [r.path for r in srv.requests if r.method == "GET"]
        thresher.prepare("flowers102/segmented", format="minidb", **common)
        second = [r.path for r in srv.requests if r.method == "GET"][len(first):]
    assert not any(SEGMENTATIONS in path for path in first)
    assert second == [f"/flowers102/{SEGMENTATIONS}"]
    assert all((root / "flowers102" / "downloads" / name).is_file()
               for name in (IMAGES, SETID, "imagelabels.mat", SEGMENTATIONS))
    assert not (root / "flowers102" / "segmented" / "downloads").exists()
    assert (root / "flowers102" / "minidb" / "manifest.json").is_file()
    assert (root / "flowers102" / "segmented" / "minidb" / "manifest.json").is_file()


def test_resize_keeps_the_mask_a_label_map(served: tuple[Miniature, Path, Path], tmp_path: Path) -> None:
    """``--resize``: the photo is resampled bilinearly, the mask by nearest neighbour (no value between 0 and 1)."""
    from PIL import Image

    from thresher.transforms import ConvertOptions

    miniature, www, checksums = served
    with LoopbackServer(www, name="mirror") as srv:
        manifest = thresher.prepare("flowers102/segmented", root=tmp_path / "root", format="hdf5", mirror=srv.url,
                                    offline=True, checksums=checksums, progress=False,
                                    options=ConvertOptions(resize=(24, 20)))
    ds = thresher.open(manifest.directory / "test")
    for i, expected in enumerate(miniature.records["test"]):
        got = ds[i]
        assert got["image"].shape[:2] == (24, 20) and got["mask"].shape == (24, 20)
        truth = Image.open(io.BytesIO(expected["mask"])).resize((20, 24), Image.Resampling.NEAREST)
        np.testing.assert_array_equal(got["mask"], np.asarray(truth))
    ds.close()
