"""Records to stored payloads: grouping a recipe's output into units and encoding them (in any process).

A split's shards are planned by record count: shard ``k`` holds the records whose source
index is in ``[k*R, (k+1)*R)``, and a record's key is its source index. ``R`` follows from
the target shard size and the size of the first stored record. So a shard's bytes depend
only on its records, never on batching, worker count or executor: a local run and shard
tasks on a cluster write the same files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from thresher import transforms
from thresher.codecs import get_codec
from thresher.features import Schema
from thresher.recipe import WHERE, BadRecord, Recipe, Record, RecordBatch
from thresher.sources.extent import resolved
from thresher.transforms import ConvertOptions

if TYPE_CHECKING:
    from thresher.conversion.pieces import Piece

log = logging.getLogger("thresher")

CHUNK_RECORDS = 256  # records per unit of work when records come one by one
TRANSFORM_CHUNK_RECORDS = 16  # ... and when each needs decoding or resizing: small units balance workers


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
    split: str = ""  # whose plan encodes it

    def __len__(self) -> int:
        return len(self.items)


# -- reading records into units ---------------------------------------------------------------------


def unit_size(plan: EncodePlan) -> int:
    return CHUNK_RECORDS if plan.source_schema == plan.schema else TRANSFORM_CHUNK_RECORDS


def units(records: Iterable[Record | BadRecord | RecordBatch], start: int = 0,
          size: int = CHUNK_RECORDS, split: str = "") -> Iterator[Unit]:
    """Group a recipe's output into units of ``size`` records, keeping batches whole."""
    index = start
    pending: list[Any] = []
    for item in records:
        if isinstance(item, RecordBatch):
            if pending:
                yield Unit(index, pending, split=split)
                index += len(pending)
                pending = []
            yield Unit(index, item, split=split)
            index += len(item)
        else:
            pending.append(item)
            if len(pending) >= size:
                yield Unit(index, pending, split=split)
                index += len(pending)
                pending = []
    if pending:
        yield Unit(index, pending, split=split)


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

@dataclass(frozen=True)
class WorkerSetup:
    """What every encoding process of one ``prepare`` call holds: each split's plan, and for
    recipes with inputs, the recipe and its files so that a worker reads its pieces itself."""

    plans: dict[str, EncodePlan]
    recipe: Recipe | None = None
    files: dict[str, Path] = field(default_factory=dict)


_SETUP: WorkerSetup | None = None
_CODEC: Any = None


def init_worker(setup: WorkerSetup) -> None:
    global _SETUP, _CODEC
    _SETUP = setup
    codecs = {plan.codec for plan in setup.plans.values()}
    _CODEC = get_codec(codecs.pop()) if codecs and None not in codecs else None


def encode_work(work: Unit | Piece) -> list[Unit]:
    """A unit of records, or a piece of a split read here, to units of payloads
    (bytes for codecs, records or columns for HDF5)."""
    from thresher.conversion.pieces import Piece, read_piece

    assert _SETUP is not None
    plan = _SETUP.plans[work.split]
    if isinstance(work, Piece):
        assert _SETUP.recipe is not None
        records = read_piece(_SETUP.recipe, _SETUP.files, work)
        return [encode_with(plan, _CODEC, unit) for unit in units(records, work.start, work.count, work.split)]
    return [encode_with(plan, _CODEC, work)]


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
        if column is None or not f.column_ok(column, n):
            return False  # kinds without a column check arrive record by record
    return True


def validate(record: Record, schema: Schema, where: str) -> BadRecord | None:
    """Catch bad values here, with their place named, rather than deep inside a codec."""
    for f in schema:
        if f.name not in record:
            return BadRecord(where, f.name, "field is missing")
        problem = f.problem(record[f.name])
        if problem:
            return BadRecord(where, f.name, problem)
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
