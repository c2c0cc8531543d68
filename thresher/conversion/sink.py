"""Encoded units into planned shards: each written under a temporary name, then synced,
hashed, recorded and renamed into place, in shard order.

Finishing a shard (sync and hash) may run on one background thread while the next shard is
written. Its first error stops the run: the writing thread sees it at its next unit, and no
shard after the failed one is recorded or placed, so progress stays a contiguous prefix.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from thresher.atomic import place, remove, temporary_name
from thresher.codecs import get_codec
from thresher.conversion.convert import EncodePlan, Unit, encode_with, units
from thresher.formats import ShardContext, ShardWriter, StorageFormat
from thresher.manifest import ShardEntry, file_entry
from thresher.recipe import BadRecord, RecordBatch

log = logging.getLogger("thresher")

MAX_QUEUED_SHARDS = 2  # finished shards waiting for the background thread before the writer waits


@dataclass
class ShardResult:
    index: int
    entry: ShardEntry
    skip_notes: list[str]


class ShardFinisher:
    """One thread that finishes shards in the order they are handed over.

    After a failure it discards every later shard instead of finishing it, and :meth:`check`
    re-raises the failure in whichever thread asks, so any thread's error ends the run.
    """

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="thresher-finish")
        self.queued: deque[Future[ShardResult | None]] = deque()
        self.failure: BaseException | None = None

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def submit(self, finish: Callable[[], ShardResult], discard: Callable[[], None]) -> Future[ShardResult | None]:
        self.check()
        while self.queued and self.queued[0].done():
            self.queued.popleft()
        if len(self.queued) >= MAX_QUEUED_SHARDS:  # back-pressure: a bounded number of open shards
            self.queued[0].exception()
            self.check()
        future = self.executor.submit(self._run, finish, discard)
        self.queued.append(future)
        return future

    def _run(self, finish: Callable[[], ShardResult], discard: Callable[[], None]) -> ShardResult | None:
        if self.failure is not None:
            discard()
            return None
        try:
            return finish()
        except BaseException as exc:
            self.failure = exc
            raise

    def close(self) -> None:
        """Finish what was handed over (finished shards stay recorded for a resume)."""
        self.executor.shutdown(wait=True)


class ShardSink:
    """Writes encoded units into planned shards, each under a temporary name until complete."""

    def __init__(self, storage: StorageFormat, split_dir: Path, out_dir: Path, context: ShardContext,
                 key_format: str, per_shard: int | None, *, skip_bad: bool,
                 locate: Callable[[int], str], on_shard: Callable[[ShardResult], None] | None = None,
                 finisher: ShardFinisher | None = None) -> None:
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
        self.finisher = finisher
        self.finishing: list[Future[ShardResult | None]] = []
        self.shard: int | None = None
        self.writer: ShardWriter | None = None
        self.tmp: Path | None = None
        self.consumed = 0
        self.skipped = 0
        self.first_index: int | None = None  # of the records stored in the open shard
        self.last_index: int | None = None
        self.notes: list[str] = []

    def add(self, unit: Unit) -> None:
        if self.per_shard is None:
            raise RuntimeError("records per shard must be planned before writing")
        if self.finisher is not None:
            self.finisher.check()
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
            self._wrote(index + b - a - 1, b - a)
            return
        segment = items[a:b]
        if unit.clean or not any(isinstance(payload, BadRecord) for payload in segment):
            fmt = self.key_bytes
            self.writer.append_many([fmt % i for i in range(index, index + len(segment))], segment)
            self._wrote(index + len(segment) - 1, len(segment))
            return
        for offset, payload in enumerate(segment):
            if isinstance(payload, BadRecord):
                self._skip(payload, index + offset)
            else:
                self.writer.append((self.key_format % (index + offset)).encode(), payload)
                self._stored(index + offset, index + offset)
            self.consumed += 1

    def _wrote(self, last_index: int, count: int) -> None:
        if count:
            self._stored(last_index - count + 1, last_index)
            self.consumed += count

    def _stored(self, first: int, last: int) -> None:
        if self.first_index is None:
            self.first_index = first
        self.last_index = last

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
        self.writer = self.storage.writer(self.tmp, replace(self.context, most_records=self.per_shard or 0))
        self.shard = shard
        self.consumed = self.skipped = 0
        self.first_index = self.last_index = None
        self.notes = []

    def close_shard(self) -> ShardResult | None:
        """Finish the open shard: sync, hash, record, rename into place.

        With a finisher, that work follows on its thread while the next shard or split is
        written, and this returns None; :meth:`finish` waits.
        """
        if self.writer is None or self.tmp is None or self.shard is None or self.per_shard is None:
            return None
        writer, tmp, index = self.writer, self.tmp, self.shard
        if self.first_index is not None and self.last_index is not None:
            writer.key_range = (self.key_format % self.first_index, self.key_format % self.last_index)
        writer.flush()
        final = self.split_dir / self.storage.shard_name(index)
        entry = ShardEntry(path=final.relative_to(self.out_dir).as_posix(), records=writer.records,
                           first_key=self.key_format % (index * self.per_shard), consumed=self.consumed,
                           skipped=self.skipped,
                           last_key="" if self.last_index is None else self.key_format % self.last_index)
        notes, self.writer, self.tmp = self.notes, None, None
        if self.finisher is None:
            return self._finished(index, writer, tmp, final, entry, notes)

        def discard() -> None:
            _discard(writer, tmp)

        self.finishing.append(self.finisher.submit(
            lambda: self._finished(index, writer, tmp, final, entry, notes), discard))
        return None

    def _finished(self, index: int, writer: ShardWriter, tmp: Path, final: Path, entry: ShardEntry,
                  notes: list[str]) -> ShardResult:
        """Close (sync) and hash the complete shard, record it, then give it its final name.

        In this order a shard under its final name is always recorded. A kill between the
        record and the rename leaves a record whose file is missing: the next run trusts the
        records only up to there, removes the temporary and writes that shard again.
        """
        try:
            writer.close()
        except BaseException:
            _discard(writer, tmp)
            raise
        files = sorted(p for p in tmp.rglob("*") if p.is_file()) if tmp.is_dir() else [tmp]
        hashed = [file_entry(self.out_dir, p) for p in files]
        for f, p in zip(hashed, files, strict=True):
            f.path = (final / p.relative_to(tmp) if tmp.is_dir() else final).relative_to(self.out_dir).as_posix()
        entry.files = hashed
        result = ShardResult(index, entry, notes)
        if self.on_shard is not None:
            self.on_shard(result)
        place(tmp, final)
        return result

    def finish(self) -> None:
        """Close the open shard and wait until every shard of this sink is finished."""
        self.close_shard()
        for future in self.finishing:
            future.result()
        self.finishing = []
        if self.finisher is not None:
            self.finisher.check()

    def abort(self) -> None:
        """Best effort after a failure: the original error is what the user must see."""
        if self.writer is not None and self.tmp is not None:
            _discard(self.writer, self.tmp)
        self.writer = self.tmp = None


def _discard(writer: ShardWriter, tmp: Path) -> None:
    try:
        writer.abort()
    except Exception:  # noqa: BLE001 - best effort; the error being handled is the one to report
        log.debug("abort of %s failed", tmp, exc_info=True)
    remove(tmp)


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
