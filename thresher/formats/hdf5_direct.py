"""Rows of an HDF5 dataset as slices of a read-only map of the file, where its layout allows.

libhdf5 reads a selection by copying it out of the file into a new array; for the float32
pixels of raw images that copy costs about as much as turning them into uint8 images. A
dataset that thresher writes (chunked, no filters, native numbers) keeps each chunk's rows
whole at one place in the file, and libhdf5 says where (``get_chunk_info``). Those places are
checked against the dataset's shape and the file's size once; a batch's rows are then a view
of the map (whole runs of chunks that lie end to end are one view). Anything else, or a chunk
table that does not add up, is read through h5py as before.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

import h5py
import numpy as np


class DirectRows:
    """Where the rows of one dataset lie in the mapped file: runs of consecutive rows, each contiguous."""

    def __init__(self, data: Any, dtype: np.dtype, row_shape: tuple[int, ...], runs: list[tuple[int, int, int]]) -> None:
        self.data, self.dtype, self.row_shape = data, dtype, row_shape
        self.row_items = int(np.prod(row_shape, dtype=np.int64))
        self.firsts = [first for first, _, _ in runs]
        self.runs = runs  # (first row, rows, byte offset)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start..stop-1``: a read-only view when they lie in one run, else a joined copy."""
        parts = []
        while start < stop:
            first, count, offset = self.runs[bisect_right(self.firsts, start) - 1]
            end = min(stop, first + count)
            view = np.frombuffer(self.data, self.dtype, (end - start) * self.row_items,
                                 offset + (start - first) * self.row_items * self.dtype.itemsize)
            parts.append(view.reshape(end - start, *self.row_shape))
            start = end
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def direct_rows(data: Any, dataset: h5py.Dataset) -> DirectRows | None:
    """How to slice ``dataset``'s rows out of ``data`` (the whole file, mapped), or None to read through h5py."""
    dtype = dataset.dtype
    if dtype.kind not in "fiu" or not dtype.isnative or dataset.ndim < 1 or len(data) == 0:
        return None
    plist = dataset.id.get_create_plist()
    if plist.get_nfilters():
        return None
    length, row_shape = dataset.shape[0], tuple(dataset.shape[1:])
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
    if length == 0 or row_bytes == 0:
        return None
    layout = plist.get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        offset = dataset.id.get_offset()
        places = [] if offset is None else [(0, length, offset)]
    elif layout == h5py.h5d.CHUNKED:
        places = _chunks(dataset, length, row_shape, row_bytes)
    else:
        return None
    if not places or any(offset < 0 or offset + count * row_bytes > len(data) for _, count, offset in places):
        return None
    return DirectRows(data, dtype, row_shape, _joined(places, row_bytes))


def _chunks(dataset: h5py.Dataset, length: int, row_shape: tuple[int, ...],
            row_bytes: int) -> list[tuple[int, int, int]]:
    """(first row, rows, byte offset) of every chunk, or [] if they are not whole rows stored in order."""
    chunk = dataset.chunks
    if chunk is None or tuple(chunk[1:]) != row_shape:
        return []
    rows = chunk[0]
    count = -(-length // rows)
    if dataset.id.get_num_chunks() != count:
        return []  # a chunk never written reads as the fill value, which only libhdf5 supplies
    places = []
    for i in range(count):
        info = dataset.id.get_chunk_info(i)
        if (info.filter_mask or info.byte_offset is None or info.size != rows * row_bytes
                or tuple(info.chunk_offset) != (i * rows,) + (0,) * len(row_shape)):
            return []
        places.append((i * rows, min(rows, length - i * rows), info.byte_offset))
    return places


def _joined(places: list[tuple[int, int, int]], row_bytes: int) -> list[tuple[int, int, int]]:
    """Runs of chunks that lie end to end in the file, each as one place."""
    runs = [places[0]]
    for first, count, offset in places[1:]:
        run_first, run_count, run_offset = runs[-1]
        if run_first + run_count == first and run_offset + run_count * row_bytes == offset:
            runs[-1] = (run_first, run_count + count, run_offset)
        else:
            runs.append((first, count, offset))
    return runs
