"""Reading prepared splits back: the inverse of the pipeline, for PyTorch and NumPy users.

``open`` takes a split directory (``datasets/mnist/lmdb/train``) or a format directory and
a split name. Shards of a split are presented as one dataset. Handles open lazily in each
process, so a dataset can be given to DataLoader workers (no LMDB handle crosses a fork).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from thresher.codecs import get_codec
from thresher.conversion.tiling import split_problems
from thresher.errors import CorruptShardError, DatasetReplacedError, ThresherError
from thresher.formats import ShardContext, ShardReader, get_format
from thresher.formats.base import current_pid
from thresher.formats.damage import damaged
from thresher.formats.fixed import FixedRecords
from thresher.manifest import MANIFEST_NAME, Manifest, ShardEntry
from thresher.schema import Schema


def open(path: str | Path, split: str | None = None, *, decode: bool = True) -> Dataset:  # noqa: A001
    """Open one prepared split in any format.

    ``decode=True`` turns encoded images into uint8 HWC RGB arrays and FLAC into int16 samples;
    ``decode=False`` returns the stored bytes.
    """
    path = Path(path)
    if (path / MANIFEST_NAME).exists():
        manifest = Manifest.read(path)
        if split is None:
            if len(manifest.splits) != 1:
                raise ValueError(f"{path} holds splits {sorted(manifest.splits)}; name one with split=")
            split = next(iter(manifest.splits))
    elif (path.parent / MANIFEST_NAME).exists():
        manifest = Manifest.read(path.parent)
        split = split or path.name
    else:
        raise FileNotFoundError(f"{path}: no {MANIFEST_NAME} here or in the parent; prepare the dataset first")
    if split not in manifest.splits:
        raise no_split(manifest, split)
    return Dataset(manifest, split, decode=decode)


def no_split(manifest: Manifest, split: str) -> KeyError:
    """The error for a split the manifest does not hold, listing the ones it does."""
    return KeyError(f"{manifest.directory}: no split {split!r}; prepared splits: {sorted(manifest.splits)}")


class Dataset:
    """A split as a random-access sequence of record dicts."""

    def __init__(self, manifest: Manifest, split: str, *, decode: bool = True) -> None:
        assert manifest.directory is not None
        self.manifest = manifest
        self.split = split
        self.decode = decode
        self.schema: Schema = manifest.schema_of(split)
        storage = get_format(manifest.format)
        context = ShardContext(self.schema, manifest.channel_order)
        entry = manifest.splits[split]
        problems = split_problems(entry, directory=f"{manifest.generation}/{split}", key_format=manifest.key_format,
                                  shard_name=storage.shard_name)
        if problems:
            raise damaged(manifest.directory / MANIFEST_NAME,
                          f"split {split!r} is inconsistent: " + "; ".join(problems[:3]))
        self.entries = entry.shards
        self.shards: list[ShardReader] = [
            storage.reader(manifest.directory / shard.path, context, {_within(f.path, shard.path): f.bytes for f in shard.files})
            for shard in entry.shards
        ]
        self._checked: set[int] = set()  # shards found to agree with their entries, in this process
        self._checked_pid = current_pid()
        self._starts = list(np.cumsum([0] + [s.records for s in entry.shards[:-1]])) if entry.shards else []
        self._length = entry.records
        self._codec = get_codec(manifest.codec) if manifest.codec else None
        self._encoded = [f for f in self.schema if f.needs_decoding]
        self._fixed: dict[int, FixedRecords | None] = {}  # per shard read record by record: direct reads, if any
        self._set_layout()

    def _set_layout(self) -> None:
        codec = self._codec
        self._layout = codec.value_layout(self.schema, self.manifest.channel_order) if codec is not None else None

    def __getstate__(self) -> dict[str, Any]:
        # What was checked and mapped belongs to this process; the layout holds functions, made again.
        state = dict(self.__dict__, _checked=set(), _fixed={})
        del state["_layout"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._set_layout()

    def __len__(self) -> int:
        return self._length

    def __repr__(self) -> str:
        m = self.manifest
        return f"<thresher.Dataset {m.recipe}/{self.split} {m.format} {len(self):,} records {list(self.schema.names)}>"

    def __getitem__(self, index: int) -> dict[str, Any]:
        if type(index) is not int:
            if not isinstance(index, (int, np.integer)):
                raise TypeError(f"dataset indices must be integers, not {type(index).__name__}")
            index = int(index)
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} records")
        if len(self.shards) == 1:
            shard_no, local = 0, index
        else:
            shard_no = bisect.bisect_right(self._starts, index) - 1
            local = index - int(self._starts[shard_no])
        if shard_no not in self._checked or self._checked_pid != current_pid():
            self.shard(shard_no)
        try:
            fixed = self._fixed[shard_no]
        except KeyError:  # the first record read alone from this shard: check its values for direct reads
            shard = self.shards[shard_no]
            fixed = self._fixed[shard_no] = shard.fixed_records(self._layout) if self._layout is not None else None
        if fixed is not None:
            record = fixed.record(local)
            if record is not None:
                return record
        key, payload = self._read(shard_no, local)
        return self._record(self.shards[shard_no], local, key, payload)

    def _read(self, shard_no: int, local: int) -> tuple[bytes, Any]:
        """Record ``local`` of a shard already checked in this process (see :meth:`shard`)."""
        shard = self.shards[shard_no]
        try:
            return shard.read(local)
        except IndexError:
            expected = self.manifest.splits[self.split].shards[shard_no].records
            raise damaged(shard.path, f"holds {len(shard)} records but the manifest says {expected}") from None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for shard_no in range(len(self.shards)):
            shard = self.shard(shard_no)
            for local, (key, payload) in enumerate(shard.iterate()):
                yield self._record(shard, local, key, payload)

    def shard(self, shard_no: int) -> ShardReader:
        """Shard ``shard_no``, checked against its manifest entry the first time this process uses it."""
        pid = current_pid()
        if shard_no in self._checked and self._checked_pid == pid:
            return self.shards[shard_no]
        if self._checked_pid != pid:
            self._checked, self._fixed, self._checked_pid = set(), {}, pid
        shard = self.shards[shard_no]
        try:
            check_shard(shard, self.entries[shard_no])
        except (ThresherError, OSError) as exc:
            self._raise_if_replaced(exc)
            raise
        self._checked.add(shard_no)
        return shard

    def _raise_if_replaced(self, cause: BaseException) -> None:
        """A shard that cannot be read because a newer generation replaced this one is not damage."""
        try:
            current = Manifest.read(self.manifest.directory).generation  # type: ignore[arg-type]
        except (ThresherError, OSError):
            return
        if current != self.manifest.generation:
            raise DatasetReplacedError(
                f"{self.manifest.directory}: prepared again since this dataset was opened (its shards, "
                f"{self.manifest.generation}, are replaced by {current}); open it again") from cause

    def _record(self, shard: ShardReader, local: int, key: bytes, payload: Any) -> dict[str, Any]:
        if self._codec is not None:
            try:
                record = self._codec.decode(payload, self.schema, self.manifest.channel_order)
            except CorruptShardError as exc:
                raise damaged(shard.path, f"record {local} (key {key.decode(errors='replace')}): {exc}") from exc
        else:
            record = payload
        return self._decoded(record) if self.decode and self._encoded else record

    def _decoded(self, record: dict[str, Any]) -> dict[str, Any]:
        for f in self._encoded:
            record[f.name] = f.decoded(record[f.name])
        return record

    def batches(self, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                drop_last: bool = False) -> Iterator[dict[str, Any]]:
        """Dicts of columns: fixed-shape fields as stacked arrays (ints as int64), variable-length
        fields as lists, never padded: text, bytes, boxes (a dict of arrays per record),
        sequences and tensors whose first dimension varies always; images and masks of
        differing sizes in batches where their shapes differ.

        Records are read and decoded a batch at a time (whole columns where the layout allows),
        which is what makes this much faster than indexing record by record.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        order = np.random.default_rng(seed).permutation(self._length) if shuffle else None
        for start in range(0, self._length, batch_size):
            stop = min(start + batch_size, self._length)
            if drop_last and stop - start < batch_size:
                return
            if order is None:
                yield self.columns(start, stop)
            else:
                yield self.take(order[start:stop])

    def columns(self, start: int, stop: int) -> dict[str, Any]:
        """Records ``start..stop-1`` as a dict of columns."""
        parts = []
        while start < stop:
            shard_no = bisect.bisect_right(self._starts, start) - 1
            shard, first = self.shard(shard_no), int(self._starts[shard_no])
            end = min(stop, first + self.manifest.splits[self.split].shards[shard_no].records)
            parts.append(self._shard_columns(shard, start - first, end - first))
            start = end
        return parts[0] if len(parts) == 1 else concatenate(parts)

    def take(self, indices: Any) -> dict[str, Any]:
        """The records at ``indices`` (in that order) as a dict of columns."""
        if self._codec is None:
            return self._decoded_columns(collate([self[int(i)] for i in indices]), decoded=True)
        places = [(n := bisect.bisect_right(self._starts, index) - 1, int(index - self._starts[n])) for index in indices]
        for shard_no in {shard_no for shard_no, _ in places}:
            self.shard(shard_no)
        items = [self._read(shard_no, local) for shard_no, local in places]
        try:
            columns = self._codec.decode_batch([value for _, value in items], self.schema, self.manifest.channel_order)
        except CorruptShardError:
            for (shard_no, local), (key, value) in zip(places, items, strict=True):
                self._record(self.shards[shard_no], local, key, value)  # names the first record that fails alone
            raise
        return self._decoded_columns(dict(columns))

    def _shard_columns(self, shard: ShardReader, start: int, stop: int) -> dict[str, Any]:
        if self._codec is None:
            return self._decoded_columns(shard.columns(start, stop))  # type: ignore[attr-defined]
        values = shard.values(start, stop)
        try:
            columns = self._codec.decode_batch(values, self.schema, self.manifest.channel_order)
        except CorruptShardError as exc:
            raise damaged(shard.path, f"records {start}..{stop - 1}: {exc}") from exc
        return self._decoded_columns(dict(columns))

    def _decoded_columns(self, columns: dict[str, Any], decoded: bool = False) -> dict[str, Any]:
        """Columns as :meth:`batches` hands them out; ``decoded`` when the values already are."""
        for f in self.schema:
            column = columns[f.name]
            if f.listed:
                values = list(column)
                undecoded = self.decode and f.needs_decoding and not decoded
                columns[f.name] = [f.decoded(v) for v in values] if undecoded else values
            elif decoded:
                continue
            elif f.needs_decoding and self.decode:
                columns[f.name] = _stack_if_same([f.decoded(v) for v in column])
            elif f.needs_decoding:
                columns[f.name] = list(column)
            elif isinstance(column, np.ndarray) and column.dtype == object:
                columns[f.name] = _stack_if_same(list(column))
        return columns

    def torch(self) -> Any:
        """A ``torch.utils.data.Dataset`` view (needs the optional ``torch`` extra)."""
        from thresher.torch_adapter import TorchDataset

        return TorchDataset(self)

    def close(self) -> None:
        self._checked, self._fixed = set(), {}  # shards are checked again, and their maps read anew, if reopened
        for shard in self.shards:
            shard.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _within(file: str, shard: str) -> str:
    """A shard file's name inside its shard directory (``data.mdb``, ``image/data.mdb``), or its own name."""
    path = PurePosixPath(file)
    return path.name if path == PurePosixPath(shard) else path.relative_to(shard).as_posix()


def check_shard(shard: ShardReader, entry: ShardEntry) -> None:
    """A shard must hold the records its entry says: their number, and its first and last key.

    A shard file that belongs to another place in the split (or another run) fails here,
    before any of its records is handed out as if it were the one the manifest names.
    """
    count = len(shard)
    if count != entry.records:
        raise damaged(shard.path, f"holds {count} records, the manifest says {entry.records}")
    keys = shard.key_range()
    if keys is None:
        return
    first, last = keys
    if last != entry.last_key or not entry.first_key <= first <= last:
        raise damaged(shard.path, f"holds keys {first}..{last}, the manifest says {entry.first_key}..{entry.last_key}")


def _stack_if_same(arrays: list[Any]) -> Any:
    if arrays and all(isinstance(a, np.ndarray) and a.shape == arrays[0].shape for a in arrays):
        return np.stack(arrays)
    return arrays


def concatenate(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Join column dicts of consecutive records (arrays end to end, lists extended)."""
    out: dict[str, Any] = {}
    for name, first in parts[0].items():
        if isinstance(first, np.ndarray) and all(isinstance(p[name], np.ndarray) for p in parts):
            out[name] = np.concatenate([p[name] for p in parts])
        else:
            out[name] = [v for p in parts for v in p[name]]
    return out


def collate(records: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in records[0]:
        values = [r[name] for r in records]
        first = values[0]
        if isinstance(first, np.ndarray):
            same = all(v.shape == first.shape for v in values)
            out[name] = np.stack(values) if same else values
        elif isinstance(first, (int, np.integer)):
            out[name] = np.asarray(values, dtype=np.int64)
        else:
            out[name] = values
    return out
