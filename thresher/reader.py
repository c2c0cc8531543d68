"""Reading prepared splits back: the inverse of the pipeline, for PyTorch and NumPy users.

``open`` takes a split directory (``datasets/mnist/lmdb/train``) or a format directory and
a split name. Shards of a split are presented as one dataset. Handles open lazily in each
process, so a dataset can be given to DataLoader workers (no LMDB handle crosses a fork).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from thresher.codecs import get_codec
from thresher.errors import CorruptShardError
from thresher.formats import ShardContext, ShardReader, get_format
from thresher.manifest import MANIFEST_NAME, Manifest
from thresher.schema import Schema
from thresher.transforms import decode_audio, decode_image


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
        raise KeyError(f"{manifest.directory}: no split {split!r}; prepared splits: {sorted(manifest.splits)}")
    return Dataset(manifest, split, decode=decode)


class Dataset:
    """A split as a random-access sequence of record dicts."""

    def __init__(self, manifest: Manifest, split: str, *, decode: bool = True) -> None:
        assert manifest.directory is not None
        self.manifest = manifest
        self.split = split
        self.decode = decode
        self.schema: Schema = manifest.schema
        storage = get_format(manifest.format)
        context = ShardContext(manifest.schema, manifest.channel_order)
        entry = manifest.splits[split]
        self.shards: list[ShardReader] = [
            storage.reader(manifest.directory / shard.path, context) for shard in entry.shards
        ]
        self._starts = list(np.cumsum([0] + [s.records for s in entry.shards[:-1]])) if entry.shards else []
        self._length = entry.records
        self._codec = get_codec(manifest.codec) if manifest.codec else None

    def __len__(self) -> int:
        return self._length

    def __repr__(self) -> str:
        m = self.manifest
        return f"<thresher.Dataset {m.recipe}/{self.split} {m.format} {len(self):,} records {list(self.schema.names)}>"

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"dataset indices must be integers, not {type(index).__name__}")
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} records")
        shard_no = bisect.bisect_right(self._starts, index) - 1
        shard = self.shards[shard_no]
        local = int(index - self._starts[shard_no])
        if local >= len(shard):
            raise CorruptShardError(
                f"{shard.path}: holds {len(shard)} records but the manifest says {self.manifest.splits[self.split].shards[shard_no].records}"
            )
        key, payload = shard.read(local)
        return self._record(shard, local, key, payload)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for shard in self.shards:
            for local, (key, payload) in enumerate(shard.iterate()):
                yield self._record(shard, local, key, payload)

    def _record(self, shard: ShardReader, local: int, key: bytes, payload: Any) -> dict[str, Any]:
        if self._codec is not None:
            try:
                record = self._codec.decode(payload, self.schema, self.manifest.channel_order)
            except CorruptShardError as exc:
                raise CorruptShardError(f"{shard.path}: record {local} (key {key.decode(errors='replace')}): {exc}") from exc
        else:
            record = payload
        return self._decoded(record) if self.decode else record

    def _decoded(self, record: dict[str, Any]) -> dict[str, Any]:
        for f in self.schema:
            if not f.is_encoded:
                continue
            if f.kind == "image":
                record[f.name] = decode_image(record[f.name], f.shape[2] if f.shape else 3)
            elif f.kind == "audio":
                record[f.name] = decode_audio(record[f.name])
        return record

    def batches(self, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                drop_last: bool = False) -> Iterator[dict[str, Any]]:
        """Dicts of stacked arrays (lists where records differ in shape, and for text)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if shuffle:
            order = np.random.default_rng(seed).permutation(self._length)
            for start in range(0, self._length, batch_size):
                ids = order[start:start + batch_size]
                if drop_last and len(ids) < batch_size:
                    return
                yield collate([self[int(i)] for i in ids])
            return
        batch: list[dict[str, Any]] = []
        for record in self:
            batch.append(record)
            if len(batch) == batch_size:
                yield collate(batch)
                batch = []
        if batch and not drop_last:
            yield collate(batch)

    def torch(self) -> Any:
        """A ``torch.utils.data.Dataset`` view (needs the optional ``torch`` extra)."""
        from thresher.torch_adapter import TorchDataset

        return TorchDataset(self)

    def close(self) -> None:
        for shard in self.shards:
            shard.close()


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
