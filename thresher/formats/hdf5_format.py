"""HDF5 shards in Caffe's HDF5Data conventions, readable by plain h5py.

Caffe reads datasets named after the layer's tops, of float or integer class, all sharing
N as their first dimension (``hdf5_data_layer.cpp``). Each feature says how its rows are
stored (raw images: float32 N×C×H×W in the recipe's channel order, unscaled; labels int32;
what Caffe cannot hold, such as encoded images, audio and text, as variable-length datasets
that h5py users read directly). Datasets are named after their fields, except the classic
image + label pair, which Caffe nets read as ``data`` and ``label``.
A list file beside the shards is what Caffe's ``source:`` expects.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from thresher.atomic import disk_errors, write_bytes_atomic
from thresher.errors import UnsupportedCodecError
from thresher.features import Integer, Schema, classic_pair
from thresher.formats.base import ShardContext, ShardReader, ShardWriter, SplitFilesCheck, StorageFormat
from thresher.formats.damage import damaged, expected_size, map_file, unmap
from thresher.formats.hdf5_direct import direct_rows

LIST_FILE = "files.txt"
FLUSH_ROWS = 1024
CACHE_BYTES = 512 << 20  # shards up to this size are held in memory for random access
CHUNK_BYTES = 1 << 20
BLOCK_BYTES = 16 << 20  # at most this much is buffered before a write (fewer rows for big rows)
HDF5_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, ValueError)
# What reading a damaged file raises, from libhdf5 through h5py or from our own checks of the values.
HDF5_READ_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, OSError, KeyError, ValueError, TypeError)


def dataset_names(schema: Schema) -> dict[str, str]:
    """Field name -> dataset name: the fields' own names, except Caffe's ``data``/``label`` for the
    classic image + label pair."""
    names = {f.name: f.name for f in schema}
    pair = classic_pair(schema)
    if pair is not None:
        names[pair[0].name], names[pair[1].name] = "data", "label"
    return names


def check_schema(schema: Schema) -> None:
    for f in schema:
        f.check_hdf5()
    names = list(dataset_names(schema).values())
    if len(set(names)) != len(names):
        raise UnsupportedCodecError(f"hdf5 dataset names collide: {names}")


def _take_rows(parts: list[Any], rows: int, arrays: bool) -> tuple[Any, list[Any]]:
    """The first ``rows`` rows of buffered parts, and the parts left."""
    if not arrays:
        return parts[:rows], parts[rows:]
    joined = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return joined[:rows], ([joined[rows:]] if len(joined) > rows else [])


class _DiscardableFile(io.RawIOBase):
    """The file HDF5 writes through, which can be told to drop every later write.

    After a failed write (full disk), libhdf5 retries its flush when the file is closed and at
    interpreter exit, and crashes the process if that fails again. Writing through this object
    lets ``abort`` make those last writes succeed into nothing; the temporary file is removed.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.file = open(path, "xb+", buffering=0)  # noqa: SIM115 - closed in close()
        self.discarding = False

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return offset if self.discarding else self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def readinto(self, buffer: Any) -> int:
        return self.file.readinto(buffer)

    def write(self, data: Any) -> int:
        return len(data) if self.discarding else self.file.write(data)

    def truncate(self, size: int | None = None) -> int:
        return (size or 0) if self.discarding else self.file.truncate(size)

    def flush(self) -> None:
        if not self.discarding and not self.file.closed:
            self.file.flush()

    def close(self) -> None:
        if not self.closed:
            super().close()  # flushes first, through ours
            self.file.close()


class Hdf5Writer(ShardWriter):
    """Rows are buffered and written in blocks of a fixed number of rows counted from the shard's start.

    The file's layout follows the sequence of resizes and writes; fixed blocks make that
    sequence a function of the shard's records alone, whatever batches they arrived in or
    where a run resumed, and bound the memory a block of large images takes.
    """

    def __init__(self, path: Path, context: ShardContext) -> None:
        super().__init__(path, context)
        check_schema(context.schema)
        self.raw = _DiscardableFile(path)
        with disk_errors(path, None, HDF5_ERRORS):
            self.file = h5py.File(self.raw, "w", libver="earliest", track_order=False)
        self.parts: dict[str, list[Any]] = {f.name: [] for f in context.schema}  # arrays of rows, or rows
        self.buffered = 0
        self.datasets: dict[str, h5py.Dataset] = {}
        total_row_bytes = 0
        names = dataset_names(context.schema)
        for f in context.schema:
            dtype, shape = f.h5_layout()
            row_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize if shape else 16
            total_row_bytes += row_bytes
            chunk_rows = max(1, min(CHUNK_BYTES // row_bytes, FLUSH_ROWS, context.most_records or FLUSH_ROWS))
            ds = self.file.create_dataset(
                names[f.name], shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                chunks=(chunk_rows, *shape), track_times=False,
            )
            ds.attrs["thresher_field"] = f.name
            ds.attrs["thresher_kind"] = f.kind
            self.datasets[f.name] = ds
        self.block_rows = max(1, min(FLUSH_ROWS, BLOCK_BYTES // total_row_bytes))

    def append(self, key: bytes, payload: Any) -> None:
        order = self.context.channel_order
        for f in self.context.schema:
            row = f.h5_row(payload[f.name], order)
            if f.h5_fixed:
                row = np.asarray(row, dtype=f.h5_layout()[0])
                self.parts[f.name].append(row[np.newaxis])
            else:
                self.parts[f.name].append(row)
            self.bytes += row.nbytes if isinstance(row, np.ndarray) else len(str(row))
        self._added(1)

    def append_batch(self, keys: list[bytes], batch: Any) -> None:
        """Fixed-shape columns (raw images, ints) are converted whole; anything else row by row."""
        if not all(f.h5_fixed for f in self.context.schema):
            super().append_batch(keys, batch)
            return
        for f in self.context.schema:
            column = f.h5_rows(batch.columns[f.name], self.context.channel_order)
            self.parts[f.name].append(column)
            self.bytes += column.nbytes
        self._added(len(keys))

    def _added(self, rows: int) -> None:
        self.records += rows
        self.buffered += rows
        while self.buffered >= self.block_rows:
            self._write_block(self.block_rows)

    def _write_block(self, rows: int) -> None:
        """Write the first ``rows`` buffered rows of every field, in schema order."""
        with disk_errors(self.path, None, HDF5_ERRORS):
            for f in self.context.schema:
                block, self.parts[f.name] = _take_rows(self.parts[f.name], rows, f.h5_fixed)
                ds = self.datasets[f.name]
                start = ds.shape[0]
                ds.resize(start + rows, axis=0)
                if ds.dtype.kind == "O":
                    for i, row in enumerate(block):
                        ds[start + i] = row
                else:
                    ds[start:] = block
        self.buffered -= rows

    def close(self) -> None:
        if self.buffered:
            self._write_block(self.buffered)
        with disk_errors(self.path, None, HDF5_ERRORS):
            if self.key_range is not None:
                self.file.attrs["thresher_first_key"], self.file.attrs["thresher_last_key"] = self.key_range
            self.file.flush()
            self.file.close()
            os.fsync(self.raw.file.fileno())
        self.raw.close()

    def abort(self) -> None:
        self.raw.discarding = True
        with contextlib.suppress(Exception):  # best effort after another error
            self.file.close()
        self.raw.close()


@contextlib.contextmanager
def read_errors(path: Path, what: str) -> Iterator[None]:
    """What h5py and libhdf5 raise on a damaged file, as a CorruptShardError naming it."""
    try:
        yield
    except HDF5_READ_ERRORS as exc:
        raise damaged(path, f"{what}: {exc}") from exc


class Hdf5Reader(ShardReader):
    def _open(self) -> None:
        self.map = map_file(self.path, expected_size(self.expected_sizes, self.path.name))
        try:
            with read_errors(self.path, "cannot read as a thresher HDF5 shard"):
                self.file = h5py.File(self.path, "r")
                try:
                    self._index()
                except BaseException:
                    self.file.close()
                    raise
        except BaseException:
            unmap(self.map)
            raise

    def _index(self) -> None:
        names = dataset_names(self.context.schema)
        self.datasets = {f.name: self.file[names[f.name]] for f in self.context.schema}
        lengths = {name: ds.shape[0] for name, ds in self.datasets.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"datasets disagree on the record count: {lengths}")
        self._length = next(iter(lengths.values()), 0)
        self.direct = {name: direct_rows(self.map, ds) for name, ds in self.datasets.items()}
        # What the cache would hold: raw pixels come back as uint8, a quarter of their float32 size.
        self._cached_bytes = sum(
            ds.id.get_storage_size() // f.h5_stored_fraction()
            for f, ds in zip(self.context.schema, self.datasets.values(), strict=True))
        self._cache: dict[str, Any] | None = None

    def __len__(self) -> int:
        self._ensure_open()
        return self._length

    def columns(self, start: int, stop: int) -> dict[str, Any]:
        """Records ``start..stop-1`` as columns, converted back from Caffe's layout in one step."""
        self._ensure_open()
        with read_errors(self.path, f"records {start}..{stop - 1} cannot be read"):
            return self._columns(start, stop)

    def _columns(self, start: int, stop: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self.context.schema:
            direct = self.direct[f.name]
            if direct is None:
                out[f.name] = f.h5_column(self.datasets[f.name][start:stop], self.context.channel_order)
                continue
            rows = direct.rows(start, stop)
            column = f.h5_column(rows, self.context.channel_order)
            if _holds_view(column, rows):  # nothing handed out may point into the map
                column = f.h5_column(rows.copy(), self.context.channel_order)
            out[f.name] = column
        return out

    def read(self, index: int) -> tuple[bytes, Any]:
        self._ensure_open()
        if self._cache is None and self._cached_bytes <= CACHE_BYTES:
            # Row-at-a-time HDF5 reads each pay h5py's per-call cost; a shard this size is cheaper held whole,
            # which is also how Caffe's HDF5Data layer reads it.
            columns = self.columns(0, self._length)
            # Columns of Python ints (scalar labels) are cheaper to index as lists.
            self._cache = {f.name: c.tolist() if isinstance(c, np.ndarray) and c.dtype == np.int64 and c.ndim == 1
                           and isinstance(f, Integer) else c
                           for f, c in zip(self.context.schema, columns.values(), strict=True)}
        if self._cache is not None:
            if not 0 <= index < self._length:
                raise IndexError(index)
            return b"", {name: np.array(column[index]) if isinstance(column, np.ndarray) else column[index]
                         for name, column in self._cache.items()}
        order = self.context.channel_order
        if not 0 <= index < self._length:
            raise IndexError(index)
        with read_errors(self.path, f"record {index} cannot be read"):
            return b"", {f.name: f.h5_value(self.datasets[f.name][index], order) for f in self.context.schema}

    def key_range(self) -> tuple[str, str] | None:
        """HDF5 keeps no keys per record; the writer stored the first and last as attributes."""
        self._ensure_open()
        if self._length == 0:
            return None
        try:
            first, last = self.file.attrs["thresher_first_key"], self.file.attrs["thresher_last_key"]
        except KeyError:
            raise damaged(self.path, "the attributes naming its first and last key are missing") from None
        return str(first), str(last)

    def close(self) -> None:
        if self._pid is not None:
            self.file.close()
            self.direct = {}
            unmap(self.map)
        super().close()


def _holds_view(column: Any, rows: np.ndarray) -> bool:
    """Whether a column (an array, or a list of values) shares memory with the rows it was made from."""
    values = [column] if isinstance(column, np.ndarray) else column if isinstance(column, list) else []
    return any(isinstance(v, np.ndarray) and np.may_share_memory(v, rows) for v in values)


class Hdf5Format(StorageFormat):
    name = "hdf5"
    suffix = ".h5"
    uses_codec = False


    def writer(self, path: Path, context: ShardContext) -> ShardWriter:
        return Hdf5Writer(path, context)

    def reader(self, path: Path, context: ShardContext,
               expected_sizes: Mapping[str, int] | None = None) -> ShardReader:
        return Hdf5Reader(path, context, expected_sizes)

    def write_split_files(self, split_dir: Path, shard_paths: list[Path]) -> list[Path]:
        """``files.txt``: one absolute shard path per line, as Caffe's HDF5Data ``source:`` reads it.

        Caffe opens these paths relative to its working directory, so only absolute ones work
        from anywhere; after the output is moved, ``thresher relocate`` rewrites the file.
        """
        listing = split_dir / LIST_FILE
        write_bytes_atomic(listing, "".join(f"{p.resolve()}\n" for p in shard_paths).encode())
        return [listing]

    def check_split_files(self, split_dir: Path, shard_paths: list[Path]) -> SplitFilesCheck:
        """A listing of the same shards at another place means the output moved: stale, not corrupt."""
        listing = split_dir / LIST_FILE
        try:
            listed = [Path(line) for line in listing.read_text().splitlines() if line]
        except FileNotFoundError:
            return SplitFilesCheck(problems=(f"{listing}: missing",))
        wanted = [p.resolve() for p in shard_paths]
        if listed == wanted:
            return SplitFilesCheck()
        if [p.parts[-2:] for p in listed] == [p.parts[-2:] for p in wanted]:
            old = listed[0].parent.parent if listed else "another directory"
            return SplitFilesCheck(warnings=(
                f"{listing}: lists the shards at their old place {old}, so Caffe would not find them here; "
                f"run: thresher relocate {split_dir.parent}",))
        return SplitFilesCheck(problems=(
            f"{listing}: lists {[str(p) for p in listed]}, the split's shards are {[str(p) for p in wanted]}",))
