"""Records to shards: encoding (in any process) and shard writing (one shard at a time).

A split's shards are planned by record count: shard ``k`` holds the records whose source
index is in ``[k*R, (k+1)*R)``, and a record's key is its source index. ``R`` follows from
the target shard size and the size of the first stored record. So a shard's bytes depend
only on its records, never on batching, worker count or executor: a local run and shard
tasks on a cluster write the same files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from thresher import transforms
from thresher.atomic import place, remove, temporary_name, write_bytes_atomic
from thresher.codecs import get_codec
from thresher.extent import resolved
from thresher.formats import ShardContext, ShardWriter, StorageFormat
from thresher.manifest import ShardEntry, file_entry
from thresher.recipe import WHERE, BadRecord, Record, RecordBatch
from thresher.schema import Field, Schema
from thresher.transforms import ConvertOptions

log = logging.getLogger("thresher")

CHUNK_RECORDS = 256  # records per unit of work when records come one by one
TRANSFORM_CHUNK_RECORDS = 16  # ... and when each needs decoding or resizing: small units balance workers
MAX_SKIP_NOTES = 100
PROGRESS_NAME = ".progress.json"


@dataclass(frozen=True)
class EncodePlan:
    """Everything a worker needs to turn a recipe record into a stored payload."""

    source_schema: Schema
    schema: Schema
    options: ConvertOptions
    codec: str | None
    channel_order: str


@dataclass
class Unit:
    """Consecutive records starting at source index ``start``: a list, or columns."""

    start: int
    items: list[Any] | RecordBatch
    clean: bool = False  # known to hold no BadRecord (encoded column-wise)

    def __len__(self) -> int:
        return len(self.items)


# -- reading records into units ---------------------------------------------------------------------


def unit_size(plan: EncodePlan) -> int:
    return CHUNK_RECORDS if plan.source_schema == plan.schema else TRANSFORM_CHUNK_RECORDS


def units(records: Iterable[Record | BadRecord | RecordBatch], start: int = 0,
          size: int = CHUNK_RECORDS) -> Iterator[Unit]:
    """Group a recipe's output into units of ``size`` records, keeping batches whole."""
    index = start
    pending: list[Any] = []
    for item in records:
        if isinstance(item, RecordBatch):
            if pending:
                yield Unit(index, pending)
                index += len(pending)
                pending = []
            yield Unit(index, item)
            index += len(item)
        else:
            pending.append(item)
            if len(pending) >= size:
                yield Unit(index, pending)
                index += len(pending)
                pending = []
    if pending:
        yield Unit(index, pending)


def skip_records(stream: Iterable[Record | BadRecord | RecordBatch], count: int
                 ) -> Iterator[Record | BadRecord | RecordBatch]:
    """Drop the first ``count`` records of a recipe's output, cutting a batch if needed."""
    items = iter(stream)
    for item in items:
        size = len(item) if isinstance(item, RecordBatch) else 1
        if count >= size:
            count -= size
            continue
        if count:
            yield item.slice(count, len(item))  # type: ignore[union-attr]
            count = 0
        else:
            yield item
        break
    yield from items


def take_records(stream: Iterable[Record | BadRecord | RecordBatch], count: int
                 ) -> Iterator[Record | BadRecord | RecordBatch]:
    """The first ``count`` records of a recipe's output."""
    if count <= 0:
        return
    for item in stream:
        size = len(item) if isinstance(item, RecordBatch) else 1
        if size >= count:
            yield item.slice(0, count) if isinstance(item, RecordBatch) and size > count else item
            return
        yield item
        count -= size


# -- encoding (runs in worker processes) --------------------------------------------------------------

_PLAN: EncodePlan | None = None
_CODEC: Any = None


def init_worker(plan: EncodePlan) -> None:
    global _PLAN, _CODEC
    _PLAN = plan
    _CODEC = get_codec(plan.codec) if plan.codec else None


def encode_unit(unit: Unit) -> Unit:
    """A unit of records to a unit of payloads (bytes for codecs, records or columns for HDF5)."""
    assert _PLAN is not None
    return encode_with(_PLAN, _CODEC, unit)


def encode_with(plan: EncodePlan, codec: Any, unit: Unit) -> Unit:
    if isinstance(unit.items, RecordBatch):
        batch = unit.items
        if plan.source_schema == plan.schema and batch_is_valid(batch, plan.schema):
            if codec is None:
                return Unit(unit.start, batch)
            return Unit(unit.start, codec.encode_batch(batch.columns, plan.schema, plan.channel_order), clean=True)
        items: list[Any] = list(batch.rows())  # transforms or a bad row: record by record
    else:
        items = unit.items
    return Unit(unit.start, [encode_record(plan, codec, record) for record in items])


def encode_record(plan: EncodePlan, codec: Any, record: Record | BadRecord) -> Any:
    """One record to its stored payload, or a BadRecord saying what is wrong."""
    if isinstance(record, BadRecord):
        return record
    record = resolved(record)  # bytes a recipe left in their archive are read here, in the worker
    where = record.pop(WHERE, "")
    problem = validate(record, plan.source_schema, where)
    if problem is not None:
        return problem
    if plan.source_schema != plan.schema:
        converted = transforms.apply(record, plan.source_schema, plan.schema, plan.options, where)
        if isinstance(converted, BadRecord):
            return converted
        record = converted
    if codec is None:
        return record
    return codec.encode(record, plan.schema, plan.channel_order)


def batch_is_valid(batch: RecordBatch, schema: Schema) -> bool:
    """All rows of a batch pass :func:`validate`, checked column-wise (the fast path)."""
    n = len(batch)
    for f in schema:
        column = batch.columns.get(f.name)
        if column is None:
            return False
        if f.kind == "int":
            values = np.asarray(column)
            if values.dtype.kind not in "iu" or values.shape != (n,):
                return False
            low = -(2**31) if f.minimum is None else max(f.minimum, -(2**31))
            high = 2**31 - 1 if f.maximum is None else min(f.maximum, 2**31 - 1)
            if n and (values.min() < low or values.max() > high):
                return False
        elif f.kind == "image" and not f.is_encoded:
            if not (isinstance(column, np.ndarray) and column.dtype == np.uint8 and column.ndim == 4):
                return False
            if f.shape is not None and tuple(column.shape[1:]) != f.shape:
                return False
        else:
            return False  # other kinds arrive record by record
    return True


def validate(record: Record, schema: Schema, where: str) -> BadRecord | None:
    """Catch bad values here, with their place named, rather than deep inside a codec."""
    for f in schema:
        if f.name not in record:
            return BadRecord(where, f.name, "field is missing")
        problem = _field_problem(f, record[f.name])
        if problem:
            return BadRecord(where, f.name, problem)
    return None


def _field_problem(f: Field, value: Any) -> str | None:
    if f.kind == "int":
        if not isinstance(value, (int, np.integer)):
            return f"expected an integer, got {type(value).__name__}"
        if (f.minimum is not None and value < f.minimum) or (f.maximum is not None and value > f.maximum):
            return f"value {int(value)} is out of range {f.minimum}..{f.maximum}"
        if not -(2**31) <= int(value) < 2**31:
            return f"value {int(value)} does not fit int32"
    elif f.kind == "str":
        if not isinstance(value, str):
            return f"expected text, got {type(value).__name__}"
    elif f.is_encoded:
        if not isinstance(value, (bytes, bytearray)) or not value:
            return "expected non-empty encoded bytes"
    elif f.kind == "image":
        if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 3:
            return "expected a uint8 H×W×C array"
        if f.shape is not None and tuple(value.shape) != f.shape:
            return f"image shape {tuple(value.shape)} differs from the schema's {f.shape}"
    elif f.kind == "audio" and (not isinstance(value, np.ndarray) or value.dtype != np.int16 or value.ndim != 1):
        return "expected a 1-D int16 array"
    return None


def payload_size(payload: Any) -> int:
    """Stored bytes of one payload, to plan records per shard."""
    if isinstance(payload, (bytes, bytearray)):
        return len(payload)
    total = 0
    for value in payload.values():
        if isinstance(value, np.ndarray):
            total += value.nbytes * (4 if value.dtype == np.uint8 and value.ndim == 3 else 1)  # float32 in HDF5
        elif isinstance(value, (bytes, str)):
            total += len(value)
        else:
            total += 4
    return total


def records_per_shard(shard_size: int, first_payload: Any) -> int:
    return max(1, shard_size // max(1, payload_size(first_payload)))


def first_payload(unit: Unit) -> Any | None:
    """The first stored payload of an encoded unit, if any record in it is good."""
    if isinstance(unit.items, RecordBatch):
        return next(unit.items.rows(), None)
    return next((p for p in unit.items if not isinstance(p, BadRecord)), None)


# -- progress of a split -------------------------------------------------------------------------------


@dataclass
class ProgressState:
    """Finished shards of an interrupted run, kept only if made with the same fingerprint and plan."""

    path: Path
    fingerprint: dict[str, Any]
    records_per_shard: int | None = None
    shards: list[ShardEntry] = field(default_factory=list)
    skip_notes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, split_dir: Path, fingerprint: dict[str, Any]) -> ProgressState:
        path = split_dir / PROGRESS_NAME
        state = cls(path, fingerprint)
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return state
        if data.get("fingerprint") != fingerprint:
            return state
        state.records_per_shard = data.get("records_per_shard")
        base = split_dir.parent
        for shard in (ShardEntry.from_json(s) for s in data.get("shards", [])):
            if not all((base / f.path).is_file() and (base / f.path).stat().st_size == f.bytes for f in shard.files):
                break
            state.shards.append(shard)
        state.skip_notes = list(data.get("skip_notes", []))
        return state

    def save(self) -> None:
        data = {"fingerprint": self.fingerprint, "records_per_shard": self.records_per_shard,
                "shards": [asdict(s) for s in self.shards], "skip_notes": self.skip_notes[:MAX_SKIP_NOTES]}
        write_bytes_atomic(self.path, json.dumps(data, indent=1).encode())

    @property
    def consumed(self) -> int:
        return sum(s.consumed for s in self.shards)


def resume_split(out_dir: Path, split: str, storage: StorageFormat, fingerprint: dict[str, Any]
                 ) -> tuple[Path, ProgressState]:
    """Ready a split directory: drop what a killed run left half done, keep its finished shards."""
    split_dir = out_dir / split
    split_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(split_dir)
    state = ProgressState.load(split_dir, fingerprint)
    remove_unfinished_shards(split_dir, storage, len(state.shards))
    return split_dir, state


def remove_stale_temporaries(split_dir: Path) -> None:
    """Temporaries of a killed run (the caller holds the lock, so no live process owns them)."""
    for path in split_dir.glob(".*.tmp-*"):
        remove(path)


def remove_unfinished_shards(split_dir: Path, storage: StorageFormat, keep: int) -> None:
    """Final-named shards past the ``keep`` finished ones belong to another plan: remove them."""
    index = keep
    while (candidate := split_dir / storage.shard_name(index)).exists():
        remove(candidate)
        index += 1


# -- writing shards --------------------------------------------------------------------------------------


@dataclass
class ShardResult:
    entry: ShardEntry
    skip_notes: list[str]


class ShardSink:
    """Writes encoded units into planned shards, each under a temporary name until complete."""

    def __init__(self, storage: StorageFormat, split_dir: Path, out_dir: Path, context: ShardContext,
                 key_format: str, per_shard: int | None, *, skip_bad: bool,
                 locate: Any, on_shard: Any = None, background_hashing: bool = False) -> None:
        self.storage = storage
        self.split_dir = split_dir
        self.out_dir = out_dir
        self.context = context
        self.key_format = key_format
        self.key_bytes = key_format.encode()  # bytes % int: keys without a str round trip
        self.per_shard = per_shard
        self.skip_bad = skip_bad
        self.locate = locate  # index -> "where" for bad records the recipe could not name
        self.on_shard = on_shard  # called with each finished ShardResult, in shard order
        self.hasher = ThreadPoolExecutor(1, thread_name_prefix="thresher-hash") if background_hashing else None
        self.hashing: list[Future[ShardResult]] = []
        self.shard: int | None = None
        self.writer: ShardWriter | None = None
        self.tmp: Path | None = None
        self.consumed = 0
        self.skipped = 0
        self.notes: list[str] = []

    def add(self, unit: Unit) -> None:
        if self.per_shard is None:
            raise RuntimeError("records per shard must be planned before writing")
        start, end = unit.start, unit.start + len(unit)
        while start < end:
            shard = start // self.per_shard
            stop = min(end, (shard + 1) * self.per_shard)
            self._write(shard, start, unit, start - unit.start, stop - unit.start)
            start = stop

    def _write(self, shard: int, index: int, unit: Unit, a: int, b: int) -> None:
        if shard != self.shard:
            self.close_shard()
            self._open(shard)
        assert self.writer is not None
        items = unit.items
        if isinstance(items, RecordBatch):
            keys = [self.key_bytes % i for i in range(index, index + b - a)]
            self.writer.append_batch(keys, items.slice(a, b))
            self.consumed += b - a
            return
        segment = items[a:b]
        if unit.clean or not any(isinstance(payload, BadRecord) for payload in segment):
            fmt = self.key_bytes
            self.writer.append_many([fmt % i for i in range(index, index + len(segment))], segment)
            self.consumed += len(segment)
            return
        for offset, payload in enumerate(segment):
            if isinstance(payload, BadRecord):
                self._skip(payload, index + offset)
            else:
                self.writer.append((self.key_format % (index + offset)).encode(), payload)
            self.consumed += 1

    def _skip(self, bad: BadRecord, index: int) -> None:
        if not bad.source:
            bad = replace(bad, source=self.locate(index))
        if not self.skip_bad:
            raise bad.error()
        self.skipped += 1
        self.notes.append(str(bad.error()))
        log.warning("skipped bad record: %s", bad.error())

    def _open(self, shard: int) -> None:
        final = self.split_dir / self.storage.shard_name(shard)
        self.tmp = temporary_name(final)
        remove(self.tmp)
        self.writer = self.storage.writer(self.tmp, self.context)
        self.shard = shard
        self.consumed = self.skipped = 0
        self.notes = []

    def close_shard(self) -> ShardResult | None:
        """Finish the open shard: sync, hash, rename into place.

        With background hashing, syncing and hashing (and the progress note) follow in a thread
        while the next shard or split is written, and this returns None; :meth:`finish` waits.
        """
        if self.writer is None or self.tmp is None or self.shard is None or self.per_shard is None:
            return None
        writer, tmp = self.writer, self.tmp
        writer.flush()
        final = self.split_dir / self.storage.shard_name(self.shard)
        entry = ShardEntry(path=final.relative_to(self.out_dir).as_posix(), records=writer.records,
                           first_key=self.key_format % (self.shard * self.per_shard), consumed=self.consumed,
                           skipped=self.skipped)
        notes, self.writer, self.tmp = self.notes, None, None
        if self.hasher is None:
            return self._finished(writer, tmp, final, entry, notes)
        self.hashing.append(self.hasher.submit(self._finished, writer, tmp, final, entry, notes))
        return None

    def _finished(self, writer: ShardWriter, tmp: Path, final: Path, entry: ShardEntry,
                  notes: list[str]) -> ShardResult:
        """Close (sync) and hash the complete shard, note it as finished, then give it its final name.

        In this order a shard under its final name is always recorded. A kill between the note
        and the rename leaves a note whose file is missing: the next run stops trusting notes
        there, removes the temporary and writes that shard again.
        """
        try:
            writer.close()
        except BaseException:
            writer.abort()
            remove(tmp)
            raise
        files = sorted(p for p in tmp.rglob("*") if p.is_file()) if tmp.is_dir() else [tmp]
        hashed = [file_entry(self.out_dir, p) for p in files]
        for f, p in zip(hashed, files, strict=True):
            f.path = (final / p.relative_to(tmp) if tmp.is_dir() else final).relative_to(self.out_dir).as_posix()
        entry.files = hashed
        result = ShardResult(entry, notes)
        if self.on_shard is not None:
            self.on_shard(result)
        place(tmp, final)
        return result

    def finish(self) -> list[ShardResult]:
        """Close the open shard and wait for every background hash."""
        self.close_shard()
        results = [future.result() for future in self.hashing]
        self.hashing = []
        if self.hasher is not None:
            self.hasher.shutdown()
        return results

    def abort(self) -> None:
        """Best effort after a failure: the original error is what the user must see."""
        if self.writer is not None:
            try:
                self.writer.abort()
            except Exception:  # noqa: BLE001
                log.debug("abort of %s failed", self.tmp, exc_info=True)
        if self.tmp is not None:
            remove(self.tmp)
        self.writer = self.tmp = None
        if self.hasher is not None:
            self.hasher.shutdown(wait=True)  # finished shards still get recorded


def write_shard_from(records: Iterable[Any], sink: ShardSink, plan: EncodePlan, start: int) -> ShardResult | None:
    """Encode ``records`` (source indexes from ``start``) in this process into the sink's shards."""
    codec = get_codec(plan.codec) if plan.codec else None
    try:
        for unit in units(records, start):
            sink.add(encode_with(plan, codec, unit))
        return sink.close_shard()
    except BaseException:
        sink.abort()
        raise


