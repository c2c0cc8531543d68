"""A ``torch.utils.data.Dataset`` over a thresher Dataset; torch is an optional extra.

A DataLoader with automatic batching calls ``__getitems__`` once per batch when the dataset
has it: the batch is read and decoded column-wise (as ``ds.batches`` does), and
:func:`collate` turns the columns into tensors without splitting them into records first.
Variable-length fields (text, bytes, boxes, sequences, tensors whose first dimension varies,
images of differing sizes) stay lists, like ``ds.batches``; arrays in them become tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from collections.abc import Sequence as SequenceABC
from typing import Any

try:
    import torch
    from torch.utils.data import DataLoader
    from torch.utils.data import Dataset as _TorchBase
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("ds.torch() needs PyTorch: pip install 'thresher[torch]'") from exc

import numpy as np


def as_torch(value: Any) -> Any:
    """Arrays become tensors (inside lists and dicts too); ints, text and bytes stay as they are."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [as_torch(v) for v in value]
        return torch.from_numpy(value if value.flags.writeable else value.copy())
    if isinstance(value, Mapping):
        return {k: as_torch(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_torch(v) for v in value]
    return value


class Columns(SequenceABC):
    """A batch as columns that also reads as a list of records (for torch's default collate)."""

    def __init__(self, columns: dict[str, Any]) -> None:
        self.columns = columns
        self._length = len(next(iter(columns.values()))) if columns else 0

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._length))]
        return {name: column[i] for name, column in self.columns.items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(self._length))


def collate(batch: Any) -> dict[str, Any]:
    """Columns from ``__getitems__`` as tensors (lists where lengths vary); records are first joined."""
    return {name: as_torch(column) for name, column in columns_of(batch).items()}


def columns_of(batch: Any) -> dict[str, Any]:
    if isinstance(batch, Columns):
        return batch.columns
    from thresher.reader import collate as join

    return join(list(batch))


def collate_numpy(batch: Any) -> dict[str, Any]:
    """Like :func:`collate` but leaves arrays as numpy, for a worker to send: a pickled array
    crosses the pipe faster than torch's shared-memory hand-off of a small tensor."""
    return columns_of(batch)


class Loader(DataLoader):
    """A DataLoader whose workers send numpy columns that become tensors in this process."""

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        for batch in super().__iter__():
            yield as_torch(batch)


class TorchDataset(_TorchBase):
    """Arrays become tensors, ints stay ints; each DataLoader worker reopens shards itself."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {k: as_torch(v) if isinstance(v, np.ndarray) else v for k, v in self.dataset[index].items()}

    def __getitems__(self, indices: list[int]) -> Columns:
        """One batch in one call, read and decoded column-wise."""
        return Columns(self.dataset.take(indices))

    def loader(self, batch_size: int, **options: Any) -> DataLoader:
        """A DataLoader whose batches are read in one call each and collated column-wise into tensors
        (lists where lengths vary); ``options`` go to the DataLoader."""
        if options.get("num_workers", 0) > 0:
            return Loader(self, batch_size=batch_size, collate_fn=collate_numpy, **options)
        return DataLoader(self, batch_size=batch_size, collate_fn=collate, **options)
