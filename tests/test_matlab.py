"""MAT files: v5 written by scipy (numbers, chars, cells, structs), big-endian v5 by hand, v7.3 by h5py."""

from __future__ import annotations

import contextlib
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io as sio
import scipy.sparse as sparse

from thresher.errors import MalformedDataError
from thresher.sources.matlab import load_mat, mat_version, save_mat

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
        "negzero": np.array([[-0.0, 1.0, 2.0]]),
    }
    for code in ("i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8"):
        info = np.iinfo(code)
        arrays[f"t_{code}"] = np.array([[info.min, 0, 1], [info.max, 2, 3]], dtype=code)
    return arrays


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name, expected in want.items():
        assert got[name].shape == expected.shape, name
        assert got[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(got[name], expected, err_msg=name)
        if expected.dtype.kind == "f":  # -0.0 must stay -0.0
            np.testing.assert_array_equal(np.signbit(got[name]), np.signbit(expected), err_msg=name)


@pytest.mark.parametrize("do_compression", [True, False])
@pytest.mark.parametrize("arrays", [flowers_like(), various()], ids=["flowers", "various"])
def test_load_mat_reads_scipy_files(tmp_path: Path, do_compression: bool, arrays: dict[str, np.ndarray]) -> None:
    path = tmp_path / "scipy.mat"
    sio.savemat(path, arrays, do_compression=do_compression)
    assert_same(load_mat(path), arrays)
    assert_same(load_mat(path.read_bytes(), source="x.mat"), arrays)


def test_save_mat_is_v5_and_atomic(tmp_path: Path) -> None:
    save_mat(tmp_path / "a.mat", {"v": np.arange(4, dtype=np.int32), "labels": flowers_like()["labels"]})
    assert mat_version((tmp_path / "a.mat").read_bytes()[:520]) == "5"
    assert load_mat(tmp_path / "a.mat")["v"].shape == (1, 4)
    with pytest.raises(TypeError):
        save_mat(tmp_path / "b.mat", {"x": np.array([object()], dtype=object)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mat"]  # nothing half written left


def test_logical_and_char(tmp_path: Path) -> None:
    mask = np.array([[True, False, True]])
    sio.savemat(tmp_path / "c.mat", {"name": "héllo", "mask": mask, "rows": np.array(["ab", "cd"]), "none": ""})
    got = load_mat(tmp_path / "c.mat")
    assert got["name"] == "héllo" and got["none"] == ""
    assert list(got["rows"]) == ["ab", "cd"]
    assert_same({"mask": got["mask"]}, {"mask": mask})


def test_v5_cells_and_structs_like_bsds500(tmp_path: Path) -> None:
    # BSDS500 groundTruth: a 1xK cell, each a struct with Segmentation (uint16) and Boundaries (logical).
    annotators = [
        {"Segmentation": np.arange(6, dtype=np.uint16).reshape(2, 3) + k, "Boundaries": np.eye(2, 3, dtype=bool)}
        for k in range(3)
    ]
    truth = np.empty((1, 3), dtype=object)
    truth[0, :] = annotators
    sio.savemat(tmp_path / "100007.mat", {
        "groundTruth": truth,
        "layout": {"type": 5.0, "name": "room", "point": np.array([[1.0, 2.0], [3.0, 4.0]])},
        "mixed": np.array([[np.ones((1, 2)), "txt", np.array([[7]], dtype=np.int16)]], dtype=object),
    })
    got = load_mat(tmp_path / "100007.mat")
    assert got["groundTruth"].shape == (1, 3) and got["groundTruth"].dtype == object
    for k, annotator in enumerate(got["groundTruth"][0]):
        assert sorted(annotator) == ["Boundaries", "Segmentation"]
        assert_same(annotator, annotators[k])
    layout = got["layout"]
    assert layout["name"] == "room"
    assert_same({"type": layout["type"], "point": layout["point"]},
                {"type": np.array([[5.0]]), "point": np.array([[1.0, 2.0], [3.0, 4.0]])})
    mixed = got["mixed"]
    assert mixed.shape == (1, 3) and mixed[0, 1] == "txt"
    assert_same({"a": mixed[0, 0], "b": mixed[0, 2]},
                {"a": np.ones((1, 2)), "b": np.array([[7]], dtype=np.int16)})


def test_sparse_is_refused_naming_the_variable(tmp_path: Path) -> None:
    sio.savemat(tmp_path / "u.mat", {"ok": np.ones((1, 2)), "bad_var": sparse.csc_matrix(np.eye(3))})
    with pytest.raises(MalformedDataError, match=r"u\.mat.*'bad_var'.*sparse"):
        load_mat(tmp_path / "u.mat")


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
    # double class stored as miUINT8 (MATLAB's compact storage), column-major 2x3: [[1, 3, 5], [2, 4, 6]]
    labels = be_matrix("labels", 6, (2, 3), 2, bytes([1, 2, 3, 4, 5, 6]))
    ints = be_matrix("ints", 10, (1, 3), 3, struct.pack(">3h", -2, 300, 7))  # int16, compressed element
    packed = zlib.compress(ints)
    compressed = struct.pack(">II", 15, len(packed)) + packed
    one = be_matrix("one", 6, (1, 1), 9, struct.pack(">d", -1.5))
    ids = be_matrix("ids", 6, (1, 2), 4, struct.pack(">2H", 8189, 1))  # uint16-stored double, small element
    return header + labels + compressed + one + ids


def test_big_endian_file_with_compact_doubles() -> None:
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


# -- v7.3: HDF5 after a 512-byte header, as MATLAB's save -v7.3 lays it out --------------------

V73_HEADER = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Nov 30 09:00:00 2026 HDF5 schema 1.00 ."
              .ljust(116) + bytes(8) + b"\x00\x02IM")


def matlab_class(node: h5py.HLObject, name: str) -> h5py.HLObject:
    node.attrs["MATLAB_class"] = np.bytes_(name)
    return node


def chars(f: h5py.Group, name: str, text: str) -> h5py.Dataset:
    # 1xN char: uint16 codes, HDF5 dims reversed (N, 1)
    return matlab_class(f.create_dataset(name, data=np.array([[ord(c)] for c in text], dtype=np.uint16)), "char")


def write_v73(path: Path) -> None:
    """An MSO-like file: a 1x2 struct array imgIdx (name, label, anno), plus cells, logical, empty."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        # 2x3 double [[1, 2, 3], [4, 5, 6]] is stored transposed: HDF5 shape (3, 2)
        matlab_class(f.create_dataset("labels", data=np.array([[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]])), "double")
        matlab_class(f.create_dataset("mask", data=np.array([[1], [0], [1]], dtype=np.uint8)), "logical")
        empty = matlab_class(f.create_dataset("nothing", data=np.array([0, 0], dtype=np.uint64)), "double")
        empty.attrs["MATLAB_empty"] = np.uint8(1)
        # a 1x2 cell {'img1.jpg', int32 7}
        chars(refs, "a", "img1.jpg")
        matlab_class(refs.create_dataset("b", data=np.array([[7]], dtype=np.int32)), "int32")
        matlab_class(f.create_dataset("names", data=np.array([[refs["a"].ref], [refs["b"].ref]],
                                                               dtype=h5py.ref_dtype)), "cell")
        # a 1x1 struct: its fields are variables of the group
        scalar = matlab_class(f.create_group("info"), "struct")
        chars(scalar, "title", "MSO")
        matlab_class(scalar.create_dataset("count", data=np.array([[2.0]])), "double")
        # a 1x2 struct array: each field is an array of references, one per element
        elements = []
        for k, (name, label, boxes) in enumerate([("a.jpg", 1.0, [[1, 2, 30, 40]]),
                                                  ("b.jpg", 2.0, [[5, 6, 7, 8], [9, 10, 11, 12]])]):
            chars(refs, f"n{k}", name)
            matlab_class(refs.create_dataset(f"l{k}", data=np.array([[label]])), "double")
            matlab_class(refs.create_dataset(f"x{k}", data=np.array(boxes, dtype=np.float64).T), "double")
            elements.append((refs[f"n{k}"].ref, refs[f"l{k}"].ref, refs[f"x{k}"].ref))
        group = matlab_class(f.create_group("imgIdx"), "struct")
        for column, field in enumerate(("name", "label", "anno")):
            group.create_dataset(field, data=np.array([[e[column]] for e in elements], dtype=h5py.ref_dtype))
        fields = np.empty(3, dtype=h5py.vlen_dtype(np.dtype("S1")))
        for i, field in enumerate(("name", "label", "anno")):
            fields[i] = np.array(list(field), dtype="S1")
        group.attrs["MATLAB_fields"] = fields
    with open(path, "r+b") as out:
        out.write(V73_HEADER)


def test_v73_through_h5py(tmp_path: Path) -> None:
    path = tmp_path / "imgIdx.mat"
    write_v73(path)
    assert mat_version(path.read_bytes()[:520]) == "7.3"
    got = load_mat(path)
    assert sorted(got) == ["imgIdx", "info", "labels", "mask", "names", "nothing"]
    assert_same({k: got[k] for k in ("labels", "mask", "nothing")},
                {"labels": np.array([[1.0, 2, 3], [4, 5, 6]]), "mask": np.array([[True, False, True]]),
                 "nothing": np.zeros((0, 0))})
    assert got["names"].shape == (1, 2) and got["names"][0, 0] == "img1.jpg"
    assert_same({"b": got["names"][0, 1]}, {"b": np.array([[7]], dtype=np.int32)})
    assert got["info"]["title"] == "MSO"
    assert_same({"count": got["info"]["count"]}, {"count": np.array([[2.0]])})
    index = got["imgIdx"]
    assert index.shape == (1, 2)
    assert [e["name"] for e in index[0]] == ["a.jpg", "b.jpg"]
    assert list(index[0, 0]) == ["name", "label", "anno"]  # MATLAB's field order
    assert_same({"anno": index[0, 1]["anno"], "label": index[0, 1]["label"]},
                {"anno": np.array([[5.0, 6, 7, 8], [9, 10, 11, 12]]), "label": np.array([[2.0]])})


def test_v73_truncated_or_corrupt_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "imgIdx.mat"
    write_v73(path)
    data = path.read_bytes()
    for cut in (600, len(data) // 2, len(data) - 10):
        with pytest.raises(MalformedDataError, match=r"^imgIdx\.mat"):
            load_mat(data[:cut], source="imgIdx.mat")
    with pytest.raises(MalformedDataError, match="no HDF5 data starts at byte 512"):
        load_mat(data[:512], source="imgIdx.mat")


# -- malformed input -----------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_every_truncation_is_malformed(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "t.mat"
    save_mat(path, {"labels": np.array([[1.0, 2.0, 300.5, 4.0, 5.0]])}, compress=compress)
    data = path.read_bytes()
    for cut in range(len(data)):
        if cut == 128:
            continue  # a header alone is an empty file (scipy reads it as such)
        with pytest.raises(MalformedDataError, match=r"^t\.mat") as info:
            load_mat(data[:cut], source="t.mat")
        assert info.value.source == "t.mat"


def test_corrupt_compressed_element() -> None:
    data = bytearray(big_endian_file())
    start = data.index(b"\x00\x00\x00\x0f") + 8  # payload of the compressed element
    data[start + 5] ^= 0xFF
    with pytest.raises(MalformedDataError, match=r"^c\.mat"):
        load_mat(bytes(data), source="c.mat")


def test_random_corruption_never_escapes_as_another_error(tmp_path: Path) -> None:
    for compress in (True, False):
        save_mat(tmp_path / "r.mat", {"a": np.arange(6.0).reshape(2, 3) + 0.5, "b": np.int8([1, 2]),
                                      "c": {"f": "text"}}, compress=compress)
        clean = (tmp_path / "r.mat").read_bytes()
        rng = np.random.default_rng(7)
        for _ in range(300):
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
        (b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(124) + b"\x00\x02IM" + bytes(600), "7.3"),
        (b"MATLAB 5.0 MAT-file".ljust(124) + b"\x00\x01XX", "endian"),
        (b"MATLAB 5.0 MAT-file".ljust(124) + b"\x00\x03IM", "version"),
    ],
)
def test_not_a_mat_file(data: bytes, problem: str) -> None:
    with pytest.raises(MalformedDataError, match=f"^bad.mat.*{problem}"):
        load_mat(data, source="bad.mat")
