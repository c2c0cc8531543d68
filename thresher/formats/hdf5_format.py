"""HDF5 shards in Caffe's HDF5Data conventions, readable by plain h5py.

Caffe reads datasets named after the layer's tops, of float or integer class, all sharing
N as their first dimension (``hdf5_data_layer.cpp``). So the image field is ``data``:
float32 N×C×H×W in the recipe's channel order (pixel values unscaled, as Caffe converts
uint8 without scaling), labels are int32 (N,). What Caffe cannot hold (encoded images,
audio, text) is stored as variable-length datasets that h5py users read directly.
A list file beside the shards is what Caffe's ``source:`` expects.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from thresher.atomic import disk_errors, write_bytes_atomic
from thresher.errors import CorruptShardError, UnsupportedCodecError
from thresher.formats.base import ShardContext, ShardReader, ShardWriter, StorageFormat
from thresher.schema import Field, Schema

FLUSH_ROWS = 1024
CHUNK_BYTES = 1 << 20
BYTES_DTYPE = h5py.vlen_dtype(np.uint8)
AUDIO_DTYPE = h5py.vlen_dtype(np.int16)
TEXT_DTYPE = h5py.string_dtype("utf-8")
HDF5_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, ValueError)


def dataset_name(f: Field) -> str:
    """Caffe's tops are conventionally ``data`` and ``label``; the image is ``data``."""
    return "data" if f.kind == "image" else f.name


def check_schema(schema: Schema) -> None:
    for f in schema.of_kind("image"):
        if not f.is_encoded and f.shape is None:
            raise UnsupportedCodecError(
                f"hdf5 stores raw images as one N×C×H×W array, so every image needs the same size; "
                f"field {f.name!r} varies. Use --resize HxW, or keep the images encoded."
            )
    names = [dataset_name(f) for f in schema]
    if len(set(names)) != len(names):
        raise UnsupportedCodecError(f"hdf5 dataset names collide: {names}")


def _to_row(f: Field, value: Any, channel_order: str) -> Any:
    if f.kind == "image" and not f.is_encoded:
        pixels = np.asarray(value)
        if channel_order == "BGR":
            pixels = pixels[..., ::-1]
        return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)
    if f.kind in ("image", "audio") and f.is_encoded:
        return np.frombuffer(value, dtype=np.uint8)
    if f.kind == "audio":
        return np.asarray(value, dtype=np.int16)
    return value


def _from_row(f: Field, value: Any, channel_order: str) -> Any:
    if f.kind == "image" and not f.is_encoded:
        pixels = np.asarray(value).transpose(1, 2, 0)
        if np.any((pixels < 0) | (pixels > 255) | (pixels != np.round(pixels))):
            raise CorruptShardError(f"hdf5 field {f.name!r}: pixel values are not whole numbers in 0..255")
        pixels = pixels.astype(np.uint8)
        if channel_order == "BGR":
            pixels = pixels[..., ::-1]
        return np.ascontiguousarray(pixels)
    if f.kind in ("image", "audio") and f.is_encoded:
        return np.asarray(value, dtype=np.uint8).tobytes()
    if f.kind == "audio":
        return np.asarray(value, dtype=np.int16)
    if f.kind == "int":
        return int(value)
    if f.kind == "str":
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    return value


def _dtype_and_shape(f: Field) -> tuple[Any, tuple[int, ...]]:
    if f.kind == "image" and not f.is_encoded:
        h, w, c = f.shape  # type: ignore[misc]
        return np.float32, (c, h, w)
    if f.is_encoded:
        return BYTES_DTYPE, ()
    if f.kind == "audio":
        return AUDIO_DTYPE, ()
    if f.kind == "int":
        return np.int32, ()
    return TEXT_DTYPE, ()


class Hdf5Writer(ShardWriter):
    def __init__(self, path: Path, context: ShardContext) -> None:
        super().__init__(path, context)
        check_schema(context.schema)
        with disk_errors(path, None, HDF5_ERRORS):
            self.file = h5py.File(path, "w-", libver="earliest", track_order=False)
        self.rows: dict[str, list[Any]] = {f.name: [] for f in context.schema}
        self.datasets: dict[str, h5py.Dataset] = {}
        for f in context.schema:
            dtype, shape = _dtype_and_shape(f)
            row_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize if shape else 64
            chunk_rows = max(1, CHUNK_BYTES // max(row_bytes, 1))
            ds = self.file.create_dataset(
                dataset_name(f), shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                chunks=(chunk_rows, *shape), track_times=False,
            )
            ds.attrs["thresher_field"] = f.name
            ds.attrs["thresher_kind"] = f.kind
            self.datasets[f.name] = ds

    def append(self, key: bytes, payload: Any) -> None:
        order = self.context.channel_order
        for f in self.context.schema:
            row = _to_row(f, payload[f.name], order)
            self.rows[f.name].append(row)
            self.bytes += row.nbytes if isinstance(row, np.ndarray) else len(str(row))
        self.records += 1
        if len(self.rows[self.context.schema.fields[0].name]) >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        with disk_errors(self.path, None, HDF5_ERRORS):
            for f in self.context.schema:
                rows = self.rows[f.name]
                if not rows:
                    continue
                ds = self.datasets[f.name]
                start = ds.shape[0]
                ds.resize(start + len(rows), axis=0)
                if ds.dtype.kind == "O":
                    for i, row in enumerate(rows):
                        ds[start + i] = row
                else:
                    ds[start:] = np.stack(rows) if ds.ndim > 1 else np.asarray(rows, dtype=ds.dtype)
                rows.clear()

    def close(self) -> None:
        self._flush()
        with disk_errors(self.path, None, HDF5_ERRORS):
            self.file.flush()
            self.file.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # best effort after another error
            self.file.close()


class Hdf5Reader(ShardReader):
    def _open(self) -> None:
        try:
            self.file = h5py.File(self.path, "r")
            self.datasets = {f.name: self.file[dataset_name(f)] for f in self.context.schema}
        except (OSError, KeyError) as exc:
            raise CorruptShardError(f"{self.path}: cannot read as a thresher HDF5 shard: {exc}") from exc
        lengths = {name: ds.shape[0] for name, ds in self.datasets.items()}
        if len(set(lengths.values())) > 1:
            raise CorruptShardError(f"{self.path}: datasets disagree on the record count: {lengths}")
        self._length = next(iter(lengths.values()), 0)

    def __len__(self) -> int:
        self._ensure_open()
        return self._length

    def read(self, index: int) -> tuple[bytes, Any]:
        self._ensure_open()
        order = self.context.channel_order
        try:
            record = {f.name: _from_row(f, self.datasets[f.name][index], order) for f in self.context.schema}
        except OSError as exc:
            raise CorruptShardError(f"{self.path}: record {index} cannot be read: {exc}") from exc
        return b"", record

    def close(self) -> None:
        if self._pid is not None:
            self.file.close()
        super().close()


class Hdf5Format(StorageFormat):
    name = "hdf5"
    uses_codec = False

    def shard_name(self, index: int) -> str:
        return f"shard-{index:05d}.h5"

    def writer(self, path: Path, context: ShardContext) -> ShardWriter:
        return Hdf5Writer(path, context)

    def reader(self, path: Path, context: ShardContext) -> ShardReader:
        return Hdf5Reader(path, context)

    def split_files(self, split_dir: Path, shard_paths: list[Path]) -> list[Path]:
        """``files.txt``: one absolute shard path per line, as Caffe's HDF5Data ``source:`` reads it."""
        listing = split_dir / "files.txt"
        write_bytes_atomic(listing, "".join(f"{p.resolve()}\n" for p in shard_paths).encode())
        return [listing]
