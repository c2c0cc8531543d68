"""HDF5 rows read as slices of a map: the same columns h5py gives, for every layout a file may have.

The files are written with h5py directly (not thresher's writer), in layouts thresher writes
and in ones it does not, so the direct path must either agree with h5py or step aside.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from thresher.errors import CorruptShardError
from thresher.formats import ShardContext, get_format
from thresher.formats.damage import map_file
from thresher.formats.hdf5_direct import direct_rows
from thresher.schema import Field, Schema

SCHEMA = Schema((Field("image", "image", shape=(2, 3, 3)), Field("label", "int")))
ROWS = 23


def source(rows: int = ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Planar float32 pixels (N, C, H, W) as Caffe's HDF5Data reads them, and int32 labels."""
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (rows, 3, 2, 3)).astype(np.float32), rng.integers(-5, 1000, rows).astype(np.int32)


def write(path: Path, pixels: np.ndarray, labels: np.ndarray, **options: object) -> None:
    """Written in blocks of 4 rows, data and label in turn, so the chunks of one dataset are not all adjacent."""
    with h5py.File(path, "w", libver="earliest", rdcc_nbytes=0) as f:  # chunks placed as written
        data = f.create_dataset("data", shape=(0, 3, 2, 3), maxshape=(None, 3, 2, 3), dtype=np.float32, **options)
        label = f.create_dataset("label", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(4,))
        for start in range(0, len(labels), 4):
            stop = min(start + 4, len(labels))
            for ds, values in ((data, pixels), (label, labels)):
                ds.resize(stop, axis=0)
                ds[start:stop] = values[start:stop]


def columns(path: Path, ranges: list[tuple[int, int]], order: str = "RGB") -> list[dict]:
    reader = get_format("hdf5").reader(path, ShardContext(SCHEMA, order))
    try:
        out = [reader.columns(start, stop) for start, stop in ranges]
        for column in out:  # nothing handed out may point into the map of the file
            for value in column.values():
                assert value.flags.writeable and not np.shares_memory(value, np.frombuffer(reader.map, np.uint8))
        return out
    finally:
        reader.close()


RANGES = [(0, ROWS), (0, 1), (3, 9), (7, 8), (5, 21), (20, ROWS)]


@pytest.mark.parametrize("layout", [{"chunks": (3, 3, 2, 3)}, {"chunks": (5, 3, 2, 3)}, {"chunks": (100, 3, 2, 3)}])
@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_chunked_rows_read_directly_as_h5py_reads_them(tmp_path: Path, layout: dict, order: str) -> None:
    pixels, labels = source()
    path = tmp_path / "shard.h5"
    write(path, pixels, labels, **layout)
    with h5py.File(path, "r") as f:
        data = map_file(path, None)
        rows = direct_rows(data, f["data"])
        assert rows is not None and direct_rows(data, f["label"]) is not None
        assert len(rows.runs) > 1 or layout["chunks"][0] > ROWS  # batches across runs are joined
        del rows
        data.close()
    hwc = pixels.transpose(0, 2, 3, 1).astype(np.uint8)
    if order == "BGR":
        hwc = hwc[..., ::-1]
    for (start, stop), got in zip(RANGES, columns(path, RANGES, order), strict=True):
        assert got["image"].dtype == np.uint8 and np.array_equal(got["image"], hwc[start:stop])
        assert got["label"].dtype == np.int64 and got["label"].tolist() == labels[start:stop].tolist()


def test_contiguous_rows_read_directly(tmp_path: Path) -> None:
    pixels, labels = source()
    path = tmp_path / "shard.h5"
    with h5py.File(path, "w") as f:
        f["data"], f["label"] = pixels, labels  # fixed size: contiguous, not chunked
    with h5py.File(path, "r") as f:
        data = map_file(path, None)
        rows = direct_rows(data, f["data"])
        assert rows is not None and np.array_equal(rows.rows(2, 9), pixels[2:9])
        del rows
        data.close()
    got = columns(path, [(2, 19)])[0]
    assert np.array_equal(got["image"], pixels[2:19].transpose(0, 2, 3, 1).astype(np.uint8))


def test_layouts_the_map_cannot_serve_are_read_through_h5py(tmp_path: Path) -> None:
    """Compressed chunks, and chunks never written (libhdf5 supplies their fill value)."""
    pixels, labels = source()
    compressed = tmp_path / "compressed.h5"
    write(compressed, pixels, labels, chunks=(5, 3, 2, 3), compression="gzip")
    sparse = tmp_path / "sparse.h5"
    with h5py.File(sparse, "w") as f:
        f.create_dataset("data", shape=pixels.shape, dtype=np.float32, chunks=(5, 3, 2, 3))[:5] = pixels[:5]
        f["label"] = labels
    for path, want in ((compressed, pixels), (sparse, np.concatenate([pixels[:5], np.zeros_like(pixels[5:])]))):
        with h5py.File(path, "r") as f:
            data = map_file(path, None)
            assert direct_rows(data, f["data"]) is None
            data.close()
        got = columns(path, [(0, ROWS), (3, 12)])
        assert np.array_equal(got[0]["image"], want.transpose(0, 2, 3, 1).astype(np.uint8))
        assert np.array_equal(got[1]["image"], want[3:12].transpose(0, 2, 3, 1).astype(np.uint8))


@pytest.mark.parametrize("bad", [-1.0, 256.0, 255.5, np.nan, np.inf])
def test_pixels_outside_0_to_255_are_damage(tmp_path: Path, bad: float) -> None:
    pixels, labels = source()
    pixels[9, 1, 0, 2] = bad
    path = tmp_path / "shard.h5"
    write(path, pixels, labels, chunks=(5, 3, 2, 3))
    reader = get_format("hdf5").reader(path, ShardContext(SCHEMA))
    try:
        with pytest.raises(CorruptShardError, match="outside 0..255") as info:
            reader.columns(8, 12)
        assert str(path) in str(info.value)
        assert reader.columns(0, 8)["image"].shape == (8, 2, 3, 3)
    finally:
        reader.close()


def test_filters_that_keep_the_size_still_go_through_h5py(tmp_path: Path) -> None:
    """Shuffled chunks are as long as plain ones; only libhdf5 can put their bytes back in order."""
    pixels, labels = source()
    path = tmp_path / "shuffled.h5"
    write(path, pixels, labels, chunks=(5, 3, 2, 3), shuffle=True)
    with h5py.File(path, "r") as f:
        data = map_file(path, None)
        assert direct_rows(data, f["data"]) is None
        data.close()
    got = columns(path, [(0, ROWS)])[0]
    assert np.array_equal(got["image"], pixels.transpose(0, 2, 3, 1).astype(np.uint8))


def test_stored_bytes_handed_out_unconverted_are_copies(tmp_path: Path) -> None:
    """A raw mask is stored as the uint8 it is read as: its column must still not be a view of the map."""
    masks = np.random.default_rng(3).integers(0, 21, (ROWS, 2, 3)).astype(np.uint8)
    path = tmp_path / "shard.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("segmentation", data=masks, chunks=(4, 2, 3))
    reader = get_format("hdf5").reader(path, ShardContext(Schema((Field("segmentation", "mask", shape=(2, 3)),))))
    got = reader.columns(2, 15)["segmentation"]
    mapped = reader.map
    assert not np.shares_memory(got, np.frombuffer(mapped, np.uint8))
    reader.close()
    assert mapped.closed and np.array_equal(got, masks[2:15])


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_images_larger_than_a_check_step_are_converted_whole(tmp_path: Path, order: str) -> None:
    """Rows are checked and converted a few at a time: every step lands in its place, and a bad one is found."""
    pixels = np.random.default_rng(5).integers(0, 256, (ROWS, 3, 64, 64)).astype(np.float32)
    path = tmp_path / "shard.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=pixels, chunks=(4, 3, 64, 64))
        f["label"] = np.arange(ROWS, dtype=np.int32)
    schema = Schema((Field("image", "image", shape=(64, 64, 3)), Field("label", "int")))
    hwc = pixels.transpose(0, 2, 3, 1).astype(np.uint8)
    reader = get_format("hdf5").reader(path, ShardContext(schema, order))
    try:
        got = reader.columns(1, ROWS)["image"]
        assert np.array_equal(got, hwc[1:] if order == "RGB" else hwc[1:, ..., ::-1])
    finally:
        reader.close()
    with h5py.File(path, "r+") as f:
        f["data"][19, 2, 63, 63] = 256
    reader = get_format("hdf5").reader(path, ShardContext(schema, order))
    try:
        with pytest.raises(CorruptShardError, match="outside 0..255"):
            reader.columns(0, ROWS)
    finally:
        reader.close()
