"""Read MATLAB MAT files: v5 through scipy.io, v7.3 (HDF5 inside) through h5py, one result shape.

Datasets ship labels, splits and annotations as MAT files: Oxford Flowers' ``setid.mat`` (v5
numeric rows), BSDS500 ground truth (v5 cells of structs), MSO's ``imgIdx.mat`` (v7.3). Which
kind a file is comes from its header, never its name. Both readers give the same Python shape,
so a recipe does not care which version the publisher saved:

- numeric and logical arrays: numpy arrays in MATLAB's shape (at least 2-D) and class dtype
  (a double MATLAB stored compactly as uint8 still reads as float64);
- char arrays: ``str`` for a row, an array of ``str`` (one per row) otherwise;
- cell arrays: object arrays of MATLAB's shape holding converted values;
- structs: a ``dict`` of fields for a 1x1 struct, an object array of dicts otherwise.

Anything unreadable raises :class:`MalformedDataError` naming the file (and the variable when
one is at fault), never a scipy or h5py traceback.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from thresher.atomic import write_bytes_atomic
from thresher.errors import MalformedDataError
from thresher.sources.archive import describe_head
from thresher.sources.matcheck import BadElement, check_v5

__all__ = ["load_mat", "mat_version", "save_mat"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_V73_USERBLOCK = 512  # v7.3 files: a 128-byte MAT header padded to 512 bytes, then HDF5

# MATLAB_class attribute values of v7.3 datasets and the dtype each numeric class reads as.
_V73_DTYPES = {
    "double": "f8", "single": "f4", "int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2",
    "int32": "i4", "uint32": "u4", "int64": "i8", "uint64": "u8",
}
_V73_META = ("#refs#", "#subsystem#")  # MATLAB's own groups: referenced data, object internals


def mat_version(head: bytes) -> str:
    """``"5"`` or ``"7.3"`` from a file's first 520 bytes; anything else is ``""``."""
    if len(head) < 128:
        return ""
    version, endian = head[124:126], head[126:128]
    if endian not in (b"IM", b"MI"):
        return ""
    if head[_V73_USERBLOCK:_V73_USERBLOCK + 8] == _HDF5_SIGNATURE:
        return "7.3"
    number = int.from_bytes(version, "little" if endian == b"IM" else "big")
    return "5" if number == 0x0100 else ""


def load_mat(data: bytes | bytearray | Path | str, *, source: str = "") -> dict[str, Any]:
    """The variables of a v5 or v7.3 MAT file (a path or its bytes), converted as the module says."""
    if isinstance(data, (bytes, bytearray)):
        label, raw = source or "<memory>", bytes(data)
    else:
        label = source or str(data)
        raw = Path(data).read_bytes()
    version = mat_version(raw[:_V73_USERBLOCK + 8])
    if version == "5":
        return _load_v5(raw, label)
    if version == "7.3":
        return _load_v73(raw, label)
    raise MalformedDataError(label, "byte 0", _not_a_mat_file(raw))


def _not_a_mat_file(raw: bytes) -> str:
    if len(raw) < 128:
        if raw.lstrip().lower().startswith((b"<!doctype html", b"<html")):
            return f"not a MAT file: it {describe_head(raw)}"
        return f"too short for a MAT file header ({len(raw)} of 128 bytes)"
    if raw[124:128] in (b"\x00\x02IM", b"\x02\x00MI"):
        return f"header says MATLAB 7.3 but no HDF5 data starts at byte {_V73_USERBLOCK}; truncated?"
    if raw[126:128] in (b"IM", b"MI"):
        return f"MAT header version 0x{raw[124:126].hex()} is neither v5 (0x0100) nor v7.3 (0x0200)"
    if raw[:4].count(0):
        return "looks like a MATLAB v4 file (only v5 and v7.3 are read) or is not a MAT file"
    return f"not a MAT file (bytes 126-127 hold no endian indicator): it {describe_head(raw)}"


# -- v5 (scipy.io) ------------------------------------------------------------------------------


def _load_v5(raw: bytes, label: str) -> dict[str, Any]:
    from scipy.io import loadmat  # a core dependency, imported when a MAT file is read

    try:
        check_v5(raw)
    except BadElement as exc:
        where = f"variable {exc.variable!r}, {exc.where}" if exc.variable else exc.where
        raise MalformedDataError(label, where, exc.problem) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # scipy warns on some malformed input: an error here
            variables = loadmat(io.BytesIO(raw), mat_dtype=True, chars_as_strings=True,
                                struct_as_record=True, squeeze_me=False)
    except MemoryError:
        raise
    except Exception as exc:  # scipy's parser fails in many ways on hostile bytes, even UnboundLocalError
        raise MalformedDataError(label, "", f"unreadable MATLAB v5 data ({_reason(exc)})") from None
    out: dict[str, Any] = {}
    for name, value in variables.items():
        if name.startswith("__"):
            continue  # scipy's __header__, __version__, __globals__
        try:
            out[name] = _from_scipy(value)
        except _Unsupported as exc:
            raise MalformedDataError(label, f"variable {name!r}", str(exc)) from None
    return out


class _Unsupported(Exception):
    """A MATLAB class the converted shape cannot hold (sparse, objects, function handles)."""


def _from_scipy(value: Any) -> Any:
    from scipy.io.matlab import MatlabFunction, MatlabObject, MatlabOpaque

    if isinstance(value, (MatlabObject, MatlabFunction, MatlabOpaque)):
        raise _Unsupported(f"is a MATLAB {type(value).__name__[6:].lower()}, which has no array form")
    if not isinstance(value, np.ndarray):
        raise _Unsupported(f"is a {type(value).__name__} (sparse?), not a dense array")
    if value.dtype.names is not None:  # struct
        structs = np.empty(value.shape, dtype=object)
        for index in np.ndindex(value.shape):
            structs[index] = {field: _from_scipy(value[index][field]) for field in value.dtype.names}
        return structs[0, 0] if value.shape == (1, 1) else structs
    if value.dtype.kind == "O":  # cell
        cells = np.empty(value.shape, dtype=object)
        for index in np.ndindex(value.shape):
            cells[index] = _from_scipy(value[index])
        return cells
    if value.dtype.kind == "U":  # chars_as_strings=True: one str per row
        return _char_rows([str(row) for row in value.reshape(-1)], value.size)
    return value if value.dtype.isnative else value.astype(value.dtype.newbyteorder("="))


def _char_rows(rows: list[str], count: int) -> str | np.ndarray:
    if count == 0:
        return ""
    return rows[0] if count == 1 else np.array(rows)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:300]


# -- v7.3 (h5py) --------------------------------------------------------------------------------


def _load_v73(raw: bytes, label: str) -> dict[str, Any]:
    import h5py

    try:
        with h5py.File(io.BytesIO(raw), "r") as f:
            out: dict[str, Any] = {}
            for name, node in f.items():
                if name in _V73_META:
                    continue
                try:
                    out[name] = _from_hdf5(f, node)
                except _Unsupported as exc:
                    raise MalformedDataError(label, f"variable {name!r}", str(exc)) from None
                except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
                    raise MalformedDataError(label, f"variable {name!r}",
                                             f"unreadable MATLAB v7.3 data ({_reason(exc)})") from None
            return out
    except (OSError, ValueError) as exc:  # h5py could not open the HDF5 part at all
        raise MalformedDataError(label, f"byte {_V73_USERBLOCK}",
                                 f"unreadable HDF5 in a MATLAB v7.3 file ({_reason(exc)})") from None


def _matlab_class(node: Any) -> str:
    value = node.attrs.get("MATLAB_class", b"")
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _from_hdf5(f: Any, node: Any) -> Any:
    import h5py

    mclass = _matlab_class(node)
    if isinstance(node, h5py.Group):
        if mclass != "struct":
            what = "a sparse matrix" if "MATLAB_sparse" in node.attrs else f"MATLAB class {mclass or 'none'!r}"
            raise _Unsupported(f"is {what}, which has no dense array form")
        return _struct_v73(f, node)
    if node.attrs.get("MATLAB_empty", 0):
        dims = tuple(int(d) for d in np.asarray(node[()]).reshape(-1)) or (0, 0)
        if mclass == "char":
            return ""
        if mclass == "cell":
            return np.empty(dims, dtype=object)
        return np.zeros(dims, dtype=_V73_DTYPES.get(mclass, "f8"))
    data = node[()]
    if mclass == "cell" or node.dtype == h5py.ref_dtype:
        cells = np.empty(np.shape(data), dtype=object)
        for index in np.ndindex(cells.shape):
            cells[index] = _from_hdf5(f, f[data[index]])
        return cells.T  # HDF5 holds MATLAB's column-major dims reversed
    array = np.asarray(data).T
    if mclass == "char":
        rows = ["".join(map(chr, row)) for row in np.atleast_2d(array).astype(np.uint32)]
        return _char_rows(rows, len(rows))
    if mclass == "logical":
        return array.astype(bool)
    if mclass not in _V73_DTYPES:
        raise _Unsupported(f"has MATLAB class {mclass or 'none'!r}, which has no array form")
    if array.dtype.names == ("real", "imag"):
        array = array["real"] + 1j * array["imag"]
    else:
        array = array.astype(_V73_DTYPES[mclass], copy=False)
    return array.reshape(1, 1) if array.ndim == 0 else array.reshape(1, -1) if array.ndim == 1 else array


def _struct_v73(f: Any, group: Any) -> Any:
    """A 1x1 struct (fields are variables) or a struct array (fields are reference arrays)."""
    fields = [name for name in group if name not in _V73_META]
    if "MATLAB_fields" in group.attrs:  # MATLAB's own field order
        order = ["".join(c.decode() if isinstance(c, bytes) else str(c) for c in np.asarray(entry).reshape(-1))
                 for entry in group.attrs["MATLAB_fields"]]
        fields = [name for name in order if name in group] + [name for name in fields if name not in order]
    columns = {name: group[name] for name in fields}
    is_array = bool(columns) and all(
        not hasattr(node, "keys") and "MATLAB_class" not in node.attrs for node in columns.values())
    if not is_array:
        return {name: _from_hdf5(f, node) for name, node in columns.items()}
    refs = {name: node[()] for name, node in columns.items()}
    shape = np.shape(next(iter(refs.values())))
    structs = np.empty(shape, dtype=object)
    for index in np.ndindex(shape):
        structs[index] = {name: _from_hdf5(f, f[values[index]]) for name, values in refs.items()}
    structs = structs.T
    return structs[0, 0] if structs.shape == (1, 1) else structs


# -- writing (miniatures and tests) -------------------------------------------------------------


def save_mat(path: Path | str, arrays: Mapping[str, Any], *, compress: bool = True) -> None:
    """Write a v5 MAT file with scipy.io (compressed, as MATLAB's ``save`` does by default), atomically."""
    from scipy.io import savemat

    buffer = io.BytesIO()
    savemat(buffer, dict(arrays), do_compression=compress, oned_as="row")
    write_bytes_atomic(Path(path), buffer.getvalue())
