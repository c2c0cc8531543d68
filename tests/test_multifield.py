"""A recipe with every new kind of field, end to end through the loopback mirror in every format.

The recipe lives here, not in the package: image + palette mask + boxes with flags + multi-label
+ float tensor + text. Its miniature is written with tarfile, PIL and json directly, and the
expected values are kept as written, so a misreading on either side cannot hide.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from e2e import assert_same_value, serving
from PIL import Image as PILImage

import thresher
from thresher.features import BoundingBoxes, ClassLabel, Image, Mask, Schema, Tensor, Text
from thresher.recipe import Miniature, Recipe, Record, Source, Split

ARCHIVE = "multifield.tar"
CLASSES = ("background", "cat", "dog")
ATTRIBUTES = ("smiling", "blurry", "outdoor", "night")


class MultiField(Recipe):
    name = "multifield-test"
    title = "every field kind (test only)"
    sources = (Source(ARCHIVE, ("https://thresher.invalid/multifield.tar",)),)
    splits = (Split("train", 3),)
    schema = Schema((
        Image("photo", shape=(8, 8, 3)),
        Mask("seg", encoding="png", names=CLASSES),
        BoundingBoxes("objects", names=CLASSES, flags=("difficult", "truncated")),
        ClassLabel("attrs", names=ATTRIBUTES, multi=True),
        Tensor("landmarks", shape=(None, 2), dtype="float32"),
        Text("caption"),
    ))

    def records(self, split: str, files: Mapping[str, Path]) -> Iterator[Record]:
        with tarfile.open(files[ARCHIVE]) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
        for i in range(3):
            note = json.loads(members[f"{i}.json"])
            with PILImage.open(io.BytesIO(members[f"{i}.png"])) as img:
                photo = np.asarray(img.convert("RGB"))
            yield {"photo": photo, "seg": members[f"{i}_seg.png"],
                   "objects": {"boxes": np.array(note["boxes"], np.float32).reshape(-1, 4),
                               "labels": np.array(note["labels"], np.int64),
                               "difficult": np.array(note["difficult"], bool),
                               "truncated": np.array(note["truncated"], bool)},
                   "attrs": np.array(note["attrs"], np.uint8),
                   "landmarks": np.array(note["landmarks"], np.float32).reshape(-1, 2),
                   "caption": note["caption"]}

    def write_miniature(self, directory: Path) -> Miniature:
        rng = np.random.default_rng(9)
        members: dict[str, bytes] = {}
        expected: list[Record] = []
        for i in range(3):
            photo = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            seg = np.zeros((8, 8), np.uint8)
            seg[2:6, 1:4] = 1 + i % 2
            seg[0, :] = 255  # VOC's boundary index
            mask = PILImage.fromarray(seg, mode="P")
            mask.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
            buffers = [io.BytesIO(), io.BytesIO()]
            PILImage.fromarray(photo).save(buffers[0], format="PNG")
            mask.save(buffers[1], format="PNG")
            note = {"boxes": [[1.0, 2.0, 4.5, 6.0]] * i, "labels": [1 + i % 2] * i, "difficult": [True] * i,
                    "truncated": [False] * i, "attrs": [1, i % 2, 0, 1],
                    "landmarks": [[0.25 * k, 1.5 + i] for k in range(i + 1)], "caption": f"record {i}: ünïcode"}
            members[f"{i}.png"], members[f"{i}_seg.png"] = buffers[0].getvalue(), buffers[1].getvalue()
            members[f"{i}.json"] = json.dumps(note).encode()
            expected.append({
                "photo": photo, "seg": seg,
                "objects": {"boxes": np.array(note["boxes"], np.float32).reshape(-1, 4),
                            "labels": np.array(note["labels"], np.int64), "difficult": np.array([True] * i, bool),
                            "truncated": np.array([False] * i, bool)},
                "attrs": np.array(note["attrs"], np.uint8),
                "landmarks": np.array(note["landmarks"], np.float32), "caption": note["caption"]})
        path = directory / ARCHIVE
        with tarfile.open(path, "w") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return Miniature({ARCHIVE: path}, {"train": expected})


RECIPE = MultiField()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Miniature, Path]]:
    with serving(RECIPE, tmp_path_factory.mktemp("multifield")) as served:
        yield served


@pytest.mark.parametrize(("fmt", "codec"), [("lmdb", "tensorprotos"), ("minidb", "tensorprotos"), ("hdf5", None)])
def test_every_field_kind_reads_back_exactly(served: tuple[str, Miniature, Path], tmp_path: Path,
                                            fmt: str, codec: str | None) -> None:
    url, miniature, checksums = served
    result = thresher.prepare(RECIPE.name, root=tmp_path, format=fmt, codec=codec, mirror=url, offline=True,
                              checksums=checksums, progress=False)
    ds = thresher.open(result.directory / "train")
    try:
        want = miniature.records["train"]
        assert len(ds) == len(want)
        for i, record in enumerate(want):
            assert_same_value(ds[i], record, f"{fmt} record {i}")
        batch = next(ds.batches(3, shuffle=False))
        assert_same_value(batch["attrs"], np.stack([r["attrs"] for r in want]), f"{fmt} batch attrs")
        assert batch["caption"] == [r["caption"] for r in want]
        for i, record in enumerate(want):
            assert_same_value(batch["objects"][i], record["objects"], f"{fmt} batch objects {i}")
    finally:
        ds.close()


def test_datum_refuses_the_multifield_schema(served: tuple[str, Miniature, Path], tmp_path: Path) -> None:
    url, _, checksums = served
    with pytest.raises(thresher.errors.UnsupportedCodecError, match="datum holds one image and one integer label"):
        thresher.prepare(RECIPE.name, root=tmp_path, format="lmdb", codec="datum", mirror=url, offline=True,
                         checksums=checksums, progress=False)


def test_contact_sheet_draws_boxes_and_masks_and_inspect_names_classes(
        served: tuple[str, Miniature, Path], tmp_path: Path) -> None:
    from thresher.features.colours import class_colour
    from thresher.show import CELL, contact_sheet
    from thresher.verify import inspect_text

    url, miniature, checksums = served
    result = thresher.prepare(RECIPE.name, root=tmp_path, format="lmdb", mirror=url, offline=True,
                              checksums=checksums, progress=False)
    ds = thresher.open(result.directory / "train")
    try:
        sheet_path = contact_sheet(ds, tmp_path / "sheet.png")
    finally:
        ds.close()
    want = miniature.records["train"]
    scale = CELL // 8  # the 8×8 photos are enlarged by whole pixels
    with PILImage.open(sheet_path) as sheet:
        pixels = np.asarray(sheet.convert("RGB"))
    # record 1's box (1, 2)-(4.5, 6) is a "dog": its top-left corner in cell 1 has the dog colour
    x, y = CELL + 1 * scale + scale // 2, 2 * scale + scale // 2
    assert tuple(pixels[y, x]) == class_colour(2)
    # record 0's mask marks row 0 as boundary (255): blended half with white, lighter than the photo
    photo = want[0]["photo"][0, 0].astype(float)
    assert np.allclose(pixels[scale // 2, scale // 2], (photo + 255) / 2, atol=1)
    # a pixel of class 0 (background) shows the photo unchanged
    assert tuple(pixels[7 * scale + scale // 2, 7 * scale + scale // 2]) == tuple(want[0]["photo"][7, 7])
    text = inspect_text(result.directory)
    assert "attrs: class_label, multi-label of 4 classes: smiling, blurry, outdoor, night" in text
    assert "objects=1 boxes ['dog']" in text
    assert "attrs='smiling,blurry,night'" in text  # record 1: [1, 1, 0, 1]
    assert "landmarks=float32[2, 2] min 0 max 2.5 mean 1.312" in text  # 0, 2.5, 0.25, 2.5


@pytest.mark.parametrize("workers", [0, 2])
def test_torch_loader_fetches_batches_whole_and_lists_variable_fields(
        served: tuple[str, Miniature, Path], tmp_path: Path, workers: int) -> None:
    torch = pytest.importorskip("torch", reason="PyTorch is an optional extra (pip install 'thresher[torch]')")
    from thresher.torch_adapter import TorchDataset

    calls: list[list[int]] = []

    class Counting(TorchDataset):
        def __getitems__(self, indices: list[int]) -> Any:
            calls.append(list(indices))
            return super().__getitems__(indices)

    url, miniature, checksums = served
    result = thresher.prepare(RECIPE.name, root=tmp_path, format="lmdb", mirror=url, offline=True,
                              checksums=checksums, progress=False)
    ds = thresher.open(result.directory / "train")
    try:
        batches = list(Counting(ds).loader(2, num_workers=workers))
    finally:
        ds.close()
    want = miniature.records["train"]
    if workers == 0:
        assert calls == [[0, 1], [2]]  # one call per batch, not one per record
    assert [len(b["caption"]) for b in batches] == [2, 1]
    first = batches[0]
    assert isinstance(first["photo"], torch.Tensor) and tuple(first["photo"].shape) == (2, 8, 8, 3)
    assert torch.equal(first["photo"][1], torch.from_numpy(want[1]["photo"]))
    assert torch.equal(first["seg"][0], torch.from_numpy(want[0]["seg"]))  # decoded palette indexes
    assert torch.equal(first["attrs"], torch.from_numpy(np.stack([want[0]["attrs"], want[1]["attrs"]])))
    assert isinstance(first["landmarks"], list)  # variable length: listed, not padded
    assert [tuple(t.shape) for t in first["landmarks"]] == [(1, 2), (2, 2)]
    assert torch.equal(first["objects"][1]["boxes"], torch.from_numpy(want[1]["objects"]["boxes"]))
    assert first["caption"] == [want[0]["caption"], want[1]["caption"]]
