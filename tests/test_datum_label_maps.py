"""Datum for segmentation: an image and its label maps as one LMDB per field with the same keys.

Checked at each level: the Datum bytes (hand-written here), the shard layout as plain ``lmdb``
sees it, and a whole ``prepare``/``verify``/``thresher.open`` of VOC's segmentation splits.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pytest
from e2e import assert_same_records
from PIL import Image as PILImage
from server import LoopbackServer

import thresher
from thresher import registry
from thresher.codecs import get_codec
from thresher.codecs.messages import Datum
from thresher.errors import CorruptShardError, UnsupportedCodecError
from thresher.features import Image, Mask, Schema
from thresher.formats import ShardContext, get_format
from thresher.formats.parts import FieldParts
from thresher.miniature import write_checksums
from thresher.recipes.voc import SEGMENTATION
from thresher.verify import verify

MAPS = Schema((Image("image", encoding="jpeg"), Mask("label", encoding="png")))
JPEG = b"\xff\xd8\xff\xd9"


def png(indexes: np.ndarray) -> bytes:
    image = PILImage.fromarray(indexes, "P")
    image.putpalette([0, 0, 0, 128, 0, 0] + [224, 224, 192] * 254)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_image_and_label_map_become_two_datums_written_as_caffe_reads_them() -> None:
    codec = get_codec("datum")
    indexes = np.array([[0, 1, 255], [1, 1, 0]], np.uint8)
    value = codec.encode({"image": JPEG, "label": png(indexes)}, MAPS, "BGR")
    assert isinstance(value, FieldParts)
    image, label = value.parts()
    # convert_imageset --encoded: data (tag 4), label 0 (tag 5), encoded=true (tag 7).
    assert image == bytes.fromhex("22 04 ff d8 ff d9 28 00 38 01")
    # One raw channel of the indexes: channels 1, height 2, width 3, data, label 0, encoded=false.
    assert label == bytes.fromhex("08 01 10 02 18 03 22 06 00 01 ff 01 01 00 28 00 38 00")
    datum = Datum.FromString(label)
    assert (datum.channels, datum.height, datum.width, datum.label, datum.encoded) == (1, 2, 3, 0, False)
    back = codec.decode(value, MAPS, "BGR")
    assert back["image"] == JPEG and back["label"].dtype == np.uint8
    assert np.array_equal(back["label"], indexes)  # indexes kept, never palette colours


def test_datum_still_refuses_other_schemas_and_says_what_to_use() -> None:
    with pytest.raises(UnsupportedCodecError, match="label maps.*use --codec tensorprotos"):
        get_codec("datum").check(Schema((Mask("label"), Image("image"))))  # the image must come first


def write_maps_shard(path: Path, records: list[dict[str, Any]]) -> None:
    codec = get_codec("datum")
    writer = get_format("lmdb").writer(path, ShardContext(MAPS, "BGR"))
    writer.append_many([b"%08d" % i for i in range(len(records))], [codec.encode(r, MAPS, "BGR") for r in records])
    writer.close()


def maps_records(count: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(7)
    return [{"image": JPEG + bytes([i]), "label": png(rng.integers(0, 3, (2 + i, 3), dtype=np.uint8))}
            for i in range(count)]


def test_lmdb_shard_holds_one_environment_per_field_with_the_same_keys(tmp_path: Path) -> None:
    path = tmp_path / "shard-00000"
    records = maps_records(5)
    write_maps_shard(path, records)
    assert sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()) == [
        "image/data.mdb", "label/data.mdb"]
    seen = {}
    for field in ("image", "label"):
        env = lmdb.open(str(path / field), readonly=True, lock=False)
        with env.begin() as txn:
            seen[field] = list(txn.cursor())
        env.close()
    assert [k for k, _ in seen["image"]] == [k for k, _ in seen["label"]] == [b"%08d" % i for i in range(5)]
    assert [Datum.FromString(v).data for _, v in seen["image"]] == [r["image"] for r in records]
    reader = get_format("lmdb").reader(path, ShardContext(MAPS, "BGR"))
    codec = get_codec("datum")
    for i, record in enumerate(records):
        got = codec.decode(reader.read(i)[1], MAPS, "BGR")
        assert np.array_equal(got["label"], np.asarray(PILImage.open(io.BytesIO(record["label"]))))
    assert len(reader.values(1, 4)) == 3
    reader.close()


def test_label_lmdb_with_other_keys_is_damage_naming_its_file(tmp_path: Path) -> None:
    path = tmp_path / "shard-00000"
    write_maps_shard(path, maps_records(3))
    shutil.rmtree(path / "label")
    write_maps_shard(tmp_path / "other", maps_records(2))
    shutil.move(tmp_path / "other" / "label", path / "label")
    reader = get_format("lmdb").reader(path, ShardContext(MAPS, "BGR"))
    with pytest.raises(CorruptShardError, match=r"label/data\.mdb.*same keys"):
        len(reader)


def test_minidb_refuses_label_map_datums_instead_of_joining_them(tmp_path: Path) -> None:
    value = get_codec("datum").encode(maps_records(1)[0], MAPS, "BGR")
    writer = get_format("minidb").writer(tmp_path / "shard", ShardContext(MAPS, "BGR"))
    with pytest.raises(UnsupportedCodecError, match="one LMDB per field.*--format lmdb"):
        writer.append(b"0", value)
    writer.abort()


# -- through prepare, verify and thresher.open -----------------------------------------------------------

SEGMENTATION_SPLITS = ["segmentation_train", "segmentation_val"]


@pytest.fixture
def vocseg(tmp_path: Path) -> Iterator[tuple[LoopbackServer, Any, Path]]:
    """VOC 2012's miniature on a loopback mirror."""
    (tmp_path / "mirror" / "voc").mkdir(parents=True)
    mini = registry.get_recipe("voc/2012").write_miniature(tmp_path / "mirror" / "voc")
    sums = write_checksums(mini.files, tmp_path / "voc.tsv")
    with LoopbackServer(tmp_path / "mirror", name="mirror") as server:
        yield server, mini, sums


def prepare(vocseg: tuple[LoopbackServer, Any, Path], root: Path, **kwargs: Any) -> thresher.Manifest:
    server, _, sums = vocseg
    kwargs.setdefault("splits", SEGMENTATION_SPLITS)
    return thresher.prepare("voc/2012", root=root, mirror=server.url, offline=True, checksums=sums, progress=False,
                            **kwargs)


def test_prepare_writes_one_lmdb_per_field_that_verify_and_open_read_back(
        vocseg: tuple[LoopbackServer, Any, Path], tmp_path: Path) -> None:
    _, mini, _ = vocseg
    manifest = prepare(vocseg, tmp_path / "out", format="lmdb", codec="datum")
    assert manifest.codec == "datum"
    for split in ("segmentation_train", "segmentation_val"):
        (shard,) = manifest.splits[split].shards
        assert sorted(Path(f.path).relative_to(shard.path).as_posix() for f in shard.files) == [
            "image/data.mdb", "segmentation_class/data.mdb", "segmentation_object/data.mdb"]
        shard_dir = manifest.directory / shard.path
        keys = []
        for field in SEGMENTATION.names:
            env = lmdb.open(str(shard_dir / field), readonly=True, lock=False)
            with env.begin() as txn:
                values = list(txn.cursor())
            env.close()
            keys.append([k for k, _ in values])
            for (_, value), want in zip(values, mini.records[split], strict=True):
                datum = Datum.FromString(value)
                if field == "image":  # the published JPEG, as convert_imageset --encoded writes it
                    assert datum.encoded and datum.data == want["image"] and datum.label == 0
                else:  # the palette indexes, as a Data layer hands them to a loss layer
                    indexes = np.asarray(PILImage.open(io.BytesIO(want[field])))
                    assert not datum.encoded and datum.channels == 1 and datum.label == 0
                    assert (datum.height, datum.width) == indexes.shape and datum.data == indexes.tobytes()
        assert keys[0] == keys[1] == keys[2] and len(keys[0]) == len(mini.records[split])
        ds = thresher.open(manifest.directory / split)
        got = [ds[i] for i in range(len(ds))]
        want = [{**r, **{f: np.asarray(PILImage.open(io.BytesIO(r[f]))) for f in SEGMENTATION.names[1:]}}
                for r in mini.records[split]]
        raw = thresher.open(manifest.directory / split, decode=False)
        assert_same_records([{**r, "image": raw[i]["image"]} for i, r in enumerate(got)], want, SEGMENTATION, split)
        assert_same_records(list(raw), want, SEGMENTATION, f"{split} iterated")
        column = ds.columns(0, len(ds))["segmentation_class"]
        assert all(np.array_equal(a, b["segmentation_class"]) for a, b in zip(column, want, strict=True))
        ds.close()
        raw.close()
    assert verify(manifest.directory).ok


def test_minidb_datum_of_label_maps_is_refused_naming_lmdb(vocseg: tuple[LoopbackServer, Any, Path],
                                                          tmp_path: Path) -> None:
    with pytest.raises(UnsupportedCodecError, match="--format lmdb"):
        prepare(vocseg, tmp_path / "out", format="minidb", codec="datum")


def test_verify_names_a_damaged_label_lmdb(vocseg: tuple[LoopbackServer, Any, Path], tmp_path: Path) -> None:
    manifest = prepare(vocseg, tmp_path / "out", format="lmdb", codec="datum", splits=["segmentation_train"])
    (shard,) = manifest.splits["segmentation_train"].shards
    target = manifest.directory / shard.path / "segmentation_object" / "data.mdb"
    os.truncate(target, target.stat().st_size - 4096)
    report = verify(manifest.directory)
    assert not report.ok and any("segmentation_object/data.mdb" in p for p in report.problems), report.problems
