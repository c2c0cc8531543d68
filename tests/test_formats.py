"""Storage formats on their own: exact framing, map growth, Caffe HDF5 conventions, corruption."""

from __future__ import annotations

from pathlib import Path

import h5py
import lmdb
import numpy as np
import pytest

from thresher.errors import CorruptShardError, UnsupportedCodecError
from thresher.formats import ShardContext, get_format
from thresher.formats.minidb import frame
from thresher.schema import Field, Schema

DATUM_A = bytes.fromhex("08 01 10 02 18 02 22 04 00 01 02 03 28 07")
IMAGE_LABEL = Schema((Field("image", "image", shape=(2, 3, 3)), Field("label", "int")))


def write_shard(fmt: str, path: Path, items: list[tuple[bytes, object]], schema: Schema = IMAGE_LABEL,
                channel_order: str = "RGB", expected_bytes: int = 0) -> None:
    writer = get_format(fmt).writer(path, ShardContext(schema, channel_order, expected_bytes))
    for key, payload in items:
        writer.append(key, payload)
    writer.close()


def read_all(fmt: str, path: Path, schema: Schema = IMAGE_LABEL, channel_order: str = "RGB") -> list:
    reader = get_format(fmt).reader(path, ShardContext(schema, channel_order))
    try:
        return [reader.read(i) for i in range(len(reader))]
    finally:
        reader.close()


def test_minidb_record_framing_matches_caffe2_byte_for_byte(tmp_path: Path) -> None:
    # MiniDB framing (caffe2/core/db.cc): key "00000000", value = Datum A, lengths little-endian int32.
    expected = bytes.fromhex("08000000 0e000000") + b"00000000" + DATUM_A
    assert len(expected) == 30
    assert frame(b"00000000", DATUM_A) == expected
    path = tmp_path / "a.minidb"
    write_shard("minidb", path, [(b"00000000", DATUM_A), (b"00000001", b"\x01")])
    assert path.read_bytes() == expected + bytes.fromhex("08000000 01000000") + b"00000001" + b"\x01"
    assert read_all("minidb", path) == [(b"00000000", DATUM_A), (b"00000001", b"\x01")]


@pytest.mark.parametrize(
    ("cut", "message"),
    [(-1, "truncated"), (5, "truncated record header"), (30 + 4, "truncated record header")],
)
def test_minidb_truncation_is_reported_with_offset(tmp_path: Path, cut: int, message: str) -> None:
    path = tmp_path / "a.minidb"
    write_shard("minidb", path, [(b"00000000", DATUM_A), (b"00000001", DATUM_A)])
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(CorruptShardError, match=message) as info:
        read_all("minidb", path)
    assert str(path) in str(info.value)


def test_minidb_rejects_empty_values_like_caffe2_readers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        write_shard("minidb", tmp_path / "a.minidb", [(b"k", b"")])


def test_lmdb_is_a_directory_with_data_mdb_keys_in_order_and_no_lock_file(tmp_path: Path) -> None:
    path = tmp_path / "shard"
    items = [(b"%08d" % i, bytes([i % 256]) * (i + 1)) for i in range(300)]
    write_shard("lmdb", path, items)
    assert sorted(p.name for p in path.iterdir()) == ["data.mdb"]
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        assert list(txn.cursor()) == items
    env.close()
    assert read_all("lmdb", path) == items


def test_lmdb_map_grows_as_needed_and_stays_near_the_data_size(tmp_path: Path) -> None:
    path = tmp_path / "shard"
    payload = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    items = [(b"%08d" % i, payload) for i in range(40)]  # 40 MiB, far past the 16 MiB starting map
    write_shard("lmdb", path, items, expected_bytes=0)
    size = (path / "data.mdb").stat().st_size
    allocated = (path / "data.mdb").stat().st_blocks * 512
    assert 40 << 20 <= size < 64 << 20, size
    assert allocated <= size + (1 << 20)  # not a sparse file sized like a huge map
    assert [k for k, _ in read_all("lmdb", path)] == [k for k, _ in items]


def test_lmdb_bytes_are_identical_run_to_run(tmp_path: Path) -> None:
    items = [(b"%08d" % i, bytes(range(i % 200)) + b"x") for i in range(2000)]
    for name in ("a", "b"):
        write_shard("lmdb", tmp_path / name, items)
    assert (tmp_path / "a/data.mdb").read_bytes() == (tmp_path / "b/data.mdb").read_bytes()


def test_hdf5_follows_caffe_hdf5data_conventions(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    records = [{"image": rng.integers(0, 256, (2, 3, 3), dtype=np.uint8), "label": i} for i in range(5)]
    path = tmp_path / "s.h5"
    write_shard("hdf5", path, [(b"", r) for r in records], channel_order="BGR")
    with h5py.File(path, "r") as f:
        data, label = f["data"][...], f["label"][...]
    assert data.dtype == np.float32 and data.shape == (5, 3, 2, 3)  # N×C×H×W
    assert label.dtype == np.int32 and label.tolist() == [0, 1, 2, 3, 4]
    # channel 0 of the stored CHW array is blue when the order is BGR
    np.testing.assert_array_equal(data[2, 0], records[2]["image"][:, :, 2].astype(np.float32))
    back = read_all("hdf5", path, channel_order="BGR")
    for (_, got), want in zip(back, records, strict=True):
        np.testing.assert_array_equal(got["image"], want["image"])
        assert got["label"] == want["label"]


def test_hdf5_variable_length_fields_are_readable_with_plain_h5py(tmp_path: Path) -> None:
    schema = Schema((Field("audio", "audio"), Field("sample_rate", "int"), Field("transcript", "str"),
                     Field("photo", "image", encoding="jpeg")))
    records = [
        {"audio": np.array([1, -2, 32767, -32768], np.int16), "sample_rate": 16000, "transcript": "ZERO ÉTÉ",
         "photo": b"\xff\xd8abc\xff\xd9"},
        {"audio": np.array([5], np.int16), "sample_rate": 8000, "transcript": "", "photo": b"\xff\xd8\xff\xd9"},
    ]
    path = tmp_path / "s.h5"
    write_shard("hdf5", path, [(b"", r) for r in records], schema=schema)
    with h5py.File(path, "r") as f:
        assert f["audio"][0].tolist() == [1, -2, 32767, -32768]
        assert f["transcript"][0].decode() == "ZERO ÉTÉ"
        assert f["photo"][1].tobytes() == b"\xff\xd8\xff\xd9"
        assert f["sample_rate"][...].tolist() == [16000, 8000]
    back = [payload for _, payload in read_all("hdf5", path, schema=schema)]
    for got, want in zip(back, records, strict=True):
        np.testing.assert_array_equal(got["audio"], want["audio"])
        assert (got["sample_rate"], got["transcript"], got["photo"]) == (
            want["sample_rate"], want["transcript"], want["photo"])


def test_hdf5_refuses_raw_images_of_varying_size(tmp_path: Path) -> None:
    schema = Schema((Field("image", "image"), Field("label", "int")))
    with pytest.raises(UnsupportedCodecError, match="--resize"):
        write_shard("hdf5", tmp_path / "s.h5", [], schema=schema)


def test_unknown_format_names_the_choices() -> None:
    with pytest.raises(ValueError, match="lmdb, minidb, hdf5"):
        get_format("tfrecord")
