"""MAT v5 reader/writer: agrees with scipy both ways, reads big-endian files, refuses bad input."""

from __future__ import annotations

import contextlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from thresher.errors import MalformedDataError
from thresher.matlab import load_mat, save_mat

sio = pytest.importorskip("scipy.io")
sparse = pytest.importorskip("scipy.sparse")

RNG = np.random.default_rng(1234)


def flowers_like() -> dict[str, np.ndarray]:
    """Arrays shaped like Oxford Flowers' imagelabels.mat and setid.mat (double rows of ints)."""
    ids = RNG.permutation(np.arange(1, 8190)).astype(np.float64)
    return {
        "labels": RNG.integers(1, 103, size=(1, 8189)).astype(np.float64),
        "trnid": ids[None, :1020],
        "valid": ids[None, 1020:2040],
        "tstid": ids[None, 2040:],
    }


def various() -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {
        "f8": RNG.standard_normal((3, 4)),
        "f4": RNG.standard_normal((2, 3, 4)).astype(np.float32),
        "scalar": np.array([[7.25]]),
        "col": np.arange(5, dtype=np.float64).reshape(5, 1),
        "empty": np.zeros((0, 3)),
        "special": np.array([[np.nan, np.inf, -np.inf, -0.0, 1e300, 0.5]]),
        "negints": np.array([[-3.0, 0.0, 200.0, 70000.0, -70000.0]]),
        "negzero": np.array([[-0.0, 1.0, 2.0]]),  # integral, but compact storage would lose the sign
    }
    for code in ("i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8"):
        info = np.iinfo(code)
        arrays[f"t_{code}"] = np.array([[info.min, 0, 1], [info.max, 2, 3]], dtype=code)
    return arrays


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    got = {k: v for k, v in got.items() if not k.startswith("__")}
    assert sorted(got) == sorted(want)
    for name, expected in want.items():
        assert got[name].shape == expected.shape, name
        assert got[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(got[name], expected, err_msg=name)
        if expected.dtype.kind == "f":  # -0.0 must stay -0.0
            np.testing.assert_array_equal(np.signbit(got[name]), np.signbit(expected), err_msg=name)


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("arrays", [flowers_like(), various()], ids=["flowers", "various"])
def test_save_mat_reads_in_scipy(tmp_path: Path, compress: bool, arrays: dict[str, np.ndarray]) -> None:
    path = tmp_path / "out.mat"
    save_mat(path, arrays, compress=compress)
    assert_same(sio.loadmat(path, mat_dtype=True), arrays)
    assert_same(load_mat(path), arrays)


def test_compact_doubles_look_like_matlab(tmp_path: Path) -> None:
    # MATLAB stores small-integer doubles as uint8/uint16; scipy (default) then reports the
    # stored type, our reader the class type.
    labels = flowers_like()["labels"]
    path = tmp_path / "imagelabels.mat"
    save_mat(path, {"labels": labels})
    assert sio.loadmat(path)["labels"].dtype == np.uint8
    assert load_mat(path)["labels"].dtype == np.float64
    save_mat(path, {"ids": np.array([[1.0, 8189.0]])})
    assert sio.loadmat(path)["ids"].dtype == np.uint16
    save_mat(path, {"labels": labels}, compact=False)
    assert sio.loadmat(path)["labels"].dtype == np.float64
    assert len(path.read_bytes()) > 8189  # compressed or not, the layout differs from compact


@pytest.mark.parametrize("do_compression", [True, False])
@pytest.mark.parametrize("arrays", [flowers_like(), various()], ids=["flowers", "various"])
def test_load_mat_reads_scipy_files(
    tmp_path: Path, do_compression: bool, arrays: dict[str, np.ndarray]
) -> None:
    path = tmp_path / "scipy.mat"
    sio.savemat(path, arrays, do_compression=do_compression)
    assert_same(load_mat(path), arrays)
    assert_same(load_mat(path.read_bytes(), source="x.mat"), arrays)


def test_one_d_becomes_row_like_scipy(tmp_path: Path) -> None:
    save_mat(tmp_path / "a.mat", {"v": np.arange(4, dtype=np.int32), "s": np.int16(5)})
    got = load_mat(tmp_path / "a.mat")
    assert got["v"].shape == (1, 4) and got["s"].shape == (1, 1)
    assert sio.loadmat(tmp_path / "a.mat")["v"].shape == (1, 4)


def test_logical_and_char(tmp_path: Path) -> None:
    mask = np.array([[True, False, True]])
    save_mat(tmp_path / "b.mat", {"mask": mask})
    assert_same(load_mat(tmp_path / "b.mat"), {"mask": mask})
    assert_same(sio.loadmat(tmp_path / "b.mat", mat_dtype=True), {"mask": mask})
    sio.savemat(tmp_path / "c.mat", {"name": "héllo", "mask": mask})
    got = load_mat(tmp_path / "c.mat")
    assert "".join(got["name"][0]) == "héllo" and got["name"].shape == (1, 5)
    assert_same({"mask": got["mask"]}, {"mask": mask})


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ({"a": 1.0}, "struct"),
        (np.array([np.zeros(2), "x"], dtype=object), "cell"),
        (np.array([[1 + 2j]]), "complex"),
        (sparse.csc_matrix(np.eye(3)), "sparse"),
    ],
)
def test_unsupported_classes_name_the_variable(tmp_path: Path, value: object, what: str) -> None:
    sio.savemat(tmp_path / "u.mat", {"ok": np.ones((1, 2)), "bad_var": value})
    with pytest.raises(MalformedDataError, match=rf"u\.mat.*'bad_var'.*{what}"):
        load_mat(tmp_path / "u.mat")


def test_save_mat_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'z'"):
        save_mat(tmp_path / "a.mat", {"z": np.array([1j])})
    with pytest.raises(ValueError, match="not a valid MATLAB variable name"):
        save_mat(tmp_path / "a.mat", {"1x": np.ones(2)})
    assert not list(tmp_path.iterdir())


# -- big-endian, hand-built from the format description (scipy cannot write one) -------------


def be_element(mtype: int, payload: bytes, small: bool = False) -> bytes:
    if small:
        assert len(payload) <= 4
        return struct.pack(">HH", len(payload), mtype) + payload.ljust(4, b"\0")
    return struct.pack(">II", mtype, len(payload)) + payload + bytes(-len(payload) % 8)


def be_matrix(name: str, mclass: int, dims: tuple[int, ...], data_type: int, data: bytes) -> bytes:
    body = (
        be_element(6, struct.pack(">II", mclass, 0))
        + be_element(5, struct.pack(f">{len(dims)}i", *dims))
        + be_element(1, name.encode(), small=len(name) <= 4)
        + be_element(data_type, data, small=len(data) <= 4)
    )
    return struct.pack(">II", 14, len(body)) + body


def big_endian_file() -> bytes:
    header = b"MATLAB 5.0 MAT-file, Platform: SOL2, hand made".ljust(116) + bytes(8)
    header += struct.pack(">H", 0x0100) + b"MI"
    # double class stored as miUINT8, column-major 2x3: [[1, 3, 5], [2, 4, 6]]
    labels = be_matrix("labels", 6, (2, 3), 2, bytes([1, 2, 3, 4, 5, 6]))
    # int16 class in a compressed element
    ints = be_matrix("ints", 10, (1, 3), 3, struct.pack(">3h", -2, 300, 7))
    packed = zlib.compress(ints)
    compressed = struct.pack(">II", 15, len(packed)) + packed
    # double stored as miDOUBLE, tiny enough for the small element form? no: 8 bytes
    one = be_matrix("one", 6, (1, 1), 9, struct.pack(">d", -1.5))
    # uint16-stored double, two values = 4 bytes -> small element
    ids = be_matrix("ids", 6, (1, 2), 4, struct.pack(">2H", 8189, 1))
    return header + labels + compressed + one + ids


def test_big_endian_file() -> None:
    got = load_mat(big_endian_file(), source="be.mat")
    assert_same(
        got,
        {
            "labels": np.array([[1.0, 3, 5], [2, 4, 6]]),
            "ints": np.array([[-2, 300, 7]], dtype=np.int16),
            "one": np.array([[-1.5]]),
            "ids": np.array([[8189.0, 1.0]]),
        },
    )
    assert all(a.dtype.isnative for a in got.values())


# -- malformed input -----------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_every_truncation_is_malformed(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "t.mat"
    save_mat(path, {"labels": np.array([[1.0, 2.0, 300.5, 4.0, 5.0]])}, compress=compress)
    data = path.read_bytes()
    assert load_mat(data[:128]) == {}  # a header alone is a valid empty file
    for cut in range(len(data)):
        if cut == 128:
            continue
        with pytest.raises(MalformedDataError, match=r"t\.mat \(byte \d+") as info:
            load_mat(data[:cut], source="t.mat")
        assert info.value.source == "t.mat"


def test_truncated_big_endian_and_scipy_files(tmp_path: Path) -> None:
    data = big_endian_file()
    with pytest.raises(MalformedDataError, match="truncated"):
        load_mat(data[:-3])
    sio.savemat(tmp_path / "s.mat", flowers_like(), do_compression=True)
    data = (tmp_path / "s.mat").read_bytes()
    with pytest.raises(MalformedDataError, match=r"s\.mat \(byte"):
        load_mat(data[: len(data) // 2], source="s.mat")


def test_corrupt_compressed_element() -> None:
    data = bytearray(big_endian_file())
    start = data.index(b"\x00\x00\x00\x0f") + 8  # payload of the compressed element
    data[start + 5] ^= 0xFF
    with pytest.raises(MalformedDataError, match="compressed element"):
        load_mat(bytes(data), source="c.mat")


def test_compressed_checksum_is_verified(tmp_path: Path) -> None:
    save_mat(tmp_path / "k.mat", {"labels": flowers_like()["labels"]})
    data = bytearray((tmp_path / "k.mat").read_bytes())
    data[-1] ^= 0x01  # last byte of the zlib stream's adler32
    with pytest.raises(MalformedDataError, match=r"k\.mat \(byte 128\): compressed element does not inflate"):
        load_mat(bytes(data), source="k.mat")


def test_random_corruption_never_escapes_as_another_error(tmp_path: Path) -> None:
    for compress in (True, False):
        save_mat(
            tmp_path / "r.mat",
            {"a": np.arange(6.0).reshape(2, 3) + 0.5, "b": np.int8([1, 2])},
            compress=compress,
        )
        clean = (tmp_path / "r.mat").read_bytes()
        rng = np.random.default_rng(7)
        for _ in range(400):
            data = bytearray(clean)
            for pos in rng.integers(116, len(data), size=3):
                data[pos] = int(rng.integers(0, 256))
            with contextlib.suppress(MalformedDataError):  # anything else fails the test
                load_mat(bytes(data))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"<!DOCTYPE html><html><body>Quota exceeded</body></html>" + b" " * 200, "HTML"),
        (b"", "too short"),
        (b"\x00\x00\x00\x00" + bytes(200), "v4"),
        (b"MATLAB 7.3 MAT-file, Platform: GLNXA64" + bytes(600), "7.3"),
        (b"MATLAB 5.0 MAT-file".ljust(124) + b"\x00\x01XX", "endian"),
        (b"MATLAB 5.0 MAT-file".ljust(124) + b"\x00\x02IM", "version"),
    ],
)
def test_not_a_v5_file(data: bytes, problem: str) -> None:
    with pytest.raises(MalformedDataError, match=f"^bad.mat.*{problem}"):
        load_mat(data, source="bad.mat")


def test_unsupported_top_level_element() -> None:
    header = b"MATLAB 5.0 MAT-file".ljust(116) + bytes(8) + struct.pack("<H", 0x0100) + b"IM"
    with pytest.raises(MalformedDataError, match=r"byte 128.*type 9"):
        load_mat(header + struct.pack("<II", 9, 8) + bytes(8), source="x.mat")
