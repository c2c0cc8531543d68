"""Direct reads of fixed-layout values: the same records the codec decodes, and nothing it would refuse.

The shards are written with py-lmdb and by hand (MiniDB framing), their values as hand-written
Datum bytes or through the protobuf messages, not by thresher's writers or encoders.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pytest
from e2e import Mirror
from server import LoopbackServer

import thresher
from thresher.codecs import get_codec
from thresher.codecs.messages import DataType, TensorProtos
from thresher.errors import CorruptShardError
from thresher.formats import ShardContext, get_format
from thresher.schema import Field, Schema

GRAY = Schema((Field("image", "image", shape=(2, 2, 1)), Field("label", "int")))
COLOUR = Schema((Field("image", "image", shape=(1, 2, 3)), Field("label", "int")))
PIXELS = bytes([10, 20, 30, 40])
PLANES = bytes([1, 2, 101, 102, 201, 202])  # channel 0 of both pixels, then channel 1, then channel 2


def datum_values() -> list[tuple[bytes, bool]]:
    """Hand-written Datum values of a 2x2 grey image, and whether each is in the layout thresher writes."""
    head = bytes.fromhex("08 01 10 02 18 02 22 04") + PIXELS
    return [
        (head + bytes.fromhex("28 03 38 00"), True),
        (head + bytes.fromhex("28 ac 02 38 00"), True),  # label 300: a two-byte varint
        (head + bytes.fromhex("28 ff ff ff ff ff ff ff ff ff 01 38 00"), True),  # label -1: ten bytes
        (head + bytes.fromhex("28 03"), False),  # no encoded=false: protobuf reads it all the same
        (head + bytes.fromhex("28 03 38 00 48 05"), False),  # an unknown field after the tail
        (bytes.fromhex("28 07 08 01 10 02 18 02 22 04") + PIXELS + bytes.fromhex("38 00"), False),  # label first
        (bytes.fromhex("08 01 10 02 18 02 22 04") + bytes([9, 9, 9, 9]) + bytes.fromhex("28 05 38 00"), True),
        # The same length and tail, but a 4x1 image: damage the codec refuses, which must not be read directly.
        (bytes.fromhex("08 01 10 04 18 01 22 04") + PIXELS + bytes.fromhex("28 03 38 00"), False),
    ]


def tensorprotos_value(pixels: bytes, label: int, label_first: bool = False) -> bytes:
    protos = TensorProtos()
    entries = []
    image = protos.protos.add()
    image.dims.extend([1, 2, 3])
    image.data_type = DataType.BYTE
    image.byte_data = pixels
    entries.append(image.SerializeToString())
    tag = protos.protos.add()
    tag.dims.extend([1])
    tag.data_type = DataType.INT32
    tag.int32_data.append(label)
    entries.append(tag.SerializeToString())
    if label_first:
        entries.reverse()
    return b"".join(b"\x0a" + bytes([len(e)]) + e for e in entries)


def tensorprotos_values() -> list[tuple[bytes, bool]]:
    hwc = bytes([1, 101, 201, 2, 102, 202])  # two pixels of three channels, stored as written
    return [
        (tensorprotos_value(hwc, 4), True),
        (tensorprotos_value(hwc, 1000), True),
        (tensorprotos_value(hwc, 4, label_first=True), False),
    ]


def write_lmdb(path: Path, values: list[bytes]) -> None:
    env = lmdb.open(str(path), map_size=1 << 20, subdir=True)
    with env.begin(write=True) as txn:
        for i, value in enumerate(values):
            txn.put(f"{i:08d}".encode(), value)
    env.close()
    (path / "lock.mdb").unlink()


def write_minidb(path: Path, values: list[bytes]) -> None:
    frames = []
    for i, value in enumerate(values):
        key = f"{i:08d}".encode()
        frames.append(struct.pack("<ii", len(key), len(value)) + key + value)
    path.write_bytes(b"".join(frames))


def check_direct_reads(reader: Any, codec: Any, schema: Schema, order: str, in_layout: list[bool]) -> None:
    """Every value in the layout reads directly as the codec's reference decode has it; the others are left to it."""
    layout = codec.value_layout(schema, order)
    fixed = reader.fixed_records(layout)
    for i, expected in enumerate(in_layout):
        record = fixed.record(i)
        if not expected:
            assert record is None, f"value {i} is not in the layout, yet it was read directly"
            continue
        want = codec.decode_reference(reader.read(i)[1], schema, order)
        assert record is not None, f"value {i} is in the layout, yet it was left to the slow decode"
        assert record.keys() == want.keys()
        assert type(record["label"]) is int and record["label"] == want["label"]
        assert record["image"].dtype == np.uint8 and record["image"].shape == want["image"].shape
        assert np.array_equal(record["image"], want["image"])
        assert record["image"].flags.writeable and not np.shares_memory(record["image"], fixed.buffer)


def test_datum_values_in_lmdb_read_directly_as_the_codec_decodes_them(tmp_path: Path) -> None:
    values, in_layout = zip(*datum_values(), strict=True)
    write_lmdb(tmp_path / "shard", list(values))
    reader = get_format("lmdb").reader(tmp_path / "shard", ShardContext(GRAY))
    try:
        check_direct_reads(reader, get_codec("datum"), GRAY, "RGB", list(in_layout))
        assert [reader.fixed_records(get_codec("datum").value_layout(GRAY, "RGB")).record(i)["label"]
                for i in (0, 1, 2, 6)] == [3, 300, -1, 5]
        with pytest.raises(CorruptShardError, match=r"\(4, 1, 1\)"):
            get_codec("datum").decode(reader.read(7)[1], GRAY, "RGB")
    finally:
        reader.close()


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_planar_colour_datum_values_read_directly_in_rgb(tmp_path: Path, order: str) -> None:
    value = bytes.fromhex("08 03 10 01 18 02 22 06") + PLANES + bytes.fromhex("28 01 38 00")
    write_minidb(tmp_path / "shard.minidb", [value])
    reader = get_format("minidb").reader(tmp_path / "shard.minidb", ShardContext(COLOUR, order))
    try:
        check_direct_reads(reader, get_codec("datum"), COLOUR, order, [True])
        image = reader.fixed_records(get_codec("datum").value_layout(COLOUR, order)).record(0)["image"]
        stored = [[1, 101, 201], [2, 102, 202]]
        assert image.tolist() == [stored if order == "RGB" else [p[::-1] for p in stored]]
    finally:
        reader.close()


@pytest.mark.parametrize("fmt", ["lmdb", "minidb"])
@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_tensorprotos_values_read_directly_as_the_codec_decodes_them(tmp_path: Path, fmt: str, order: str) -> None:
    values, in_layout = zip(*tensorprotos_values(), strict=True)
    path = tmp_path / ("shard" if fmt == "lmdb" else "shard.minidb")
    (write_lmdb if fmt == "lmdb" else write_minidb)(path, list(values))
    reader = get_format(fmt).reader(path, ShardContext(COLOUR, order))
    try:
        check_direct_reads(reader, get_codec("tensorprotos"), COLOUR, order, list(in_layout))
    finally:
        reader.close()


def test_closing_a_shard_drops_its_direct_reads(tmp_path: Path) -> None:
    """The map is released on close (no view of it outlives the shard) and checked again when reopened."""
    values, _ = zip(*datum_values(), strict=True)
    write_minidb(tmp_path / "shard.minidb", list(values))
    reader = get_format("minidb").reader(tmp_path / "shard.minidb", ShardContext(GRAY))
    layout = get_codec("datum").value_layout(GRAY, "RGB")
    assert reader.fixed_records(layout).record(0)["label"] == 3
    mapped = reader.map
    reader.close()
    assert mapped.closed
    assert reader.fixed_records(layout).record(0)["label"] == 3
    assert reader.map is not mapped
    reader.close()


@pytest.mark.parametrize(("fmt", "codec"), [("lmdb", "datum"), ("minidb", "tensorprotos")])
def test_a_closed_dataset_releases_its_maps_and_reads_again(fmt: str, codec: str, mirror: Mirror,
                                                           mirror_server: LoopbackServer, tmp_path: Path) -> None:
    manifest = thresher.prepare("mnist", root=tmp_path, format=fmt, codec=codec, mirror=mirror_server.url,
                                offline=True, checksums=mirror.checksums["mnist"], progress=False,
                                arguments=mirror.miniatures["mnist"].arguments)
    want = mirror.miniatures["mnist"].records["train"]
    ds = thresher.open(manifest.directory / "train")
    layout = get_codec(codec).value_layout(ds.schema, manifest.channel_order)
    assert ds.shards[0].fixed_records(layout) is not None  # the direct path is what this test reads through
    first = [ds[i] for i in range(len(ds))]
    maps = [shard.map for shard in ds.shards]
    ds.close()
    assert all(m.closed for m in maps)
    again = [ds[i] for i in range(len(ds))]
    for records in (first, again):
        assert [r["label"] for r in records] == [r["label"] for r in want]
        assert all(np.array_equal(r["image"], w["image"]) for r, w in zip(records, want, strict=True))
    ds.close()
