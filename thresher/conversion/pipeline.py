"""The conversion pipeline: recipe → records → (options) → codec → writer → manifest.

Work is split into shards of a target size. Each finished shard is renamed into place and
noted in ``<split>/.progress.json``, so a killed run resumes after its last finished shard
and ends with the same bytes as an uninterrupted one.

Shards live in a generation directory named after everything that decides their bytes
(``<format>/gen-<hash>/<split>/``). Preparing with other options writes a new generation
beside the one readers may be using; writing the manifest, last, switches to it at once,
then ``<format>/<split>`` is pointed at it and the old generation is removed. A reader
therefore sees one generation or a clear error, never a mix.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from thresher.acquire import download
from thresher.atomic import check_free_space, remove
from thresher.conversion.convert import (
    EncodePlan,
    Unit,
    WorkerSetup,
    encode_work,
    first_payload,
    init_worker,
    records_per_shard,
    skip_records,
    unit_size,
    units,
)
from thresher.conversion.distributed import connected, convert_splits_on_cluster
from thresher.conversion.executors import OrderedPool
from thresher.conversion.generations import switch_to
from thresher.conversion.pieces import InputPlan, Piece
from thresher.conversion.progress import (
    PROGRESS_NAME,
    ProgressState,
    progress_bar,
    remove_stale_temporaries,
    resume_split,
)
from thresher.conversion.sink import ShardFinisher, ShardResult, ShardSink
from thresher.conversion.upfront import (
    LOCK_NAME,
    Job,
    check_codec,
    plan_work,
    previous_manifest,
    reuse,
    source_entries,
)
from thresher.fetch.lock import file_lock
from thresher.formats import ShardContext, StorageFormat, get_format
from thresher.manifest import Manifest, RunReport, SplitEntry
from thresher.options import ConvertOptions
from thresher.published import compare_counts
from thresher.recipe import Input, Recipe
from thresher.registry import usable_recipe
from thresher.sources.archive import walking_each_tar_once

log = logging.getLogger("thresher")


def prepare(
    name: str, *, root: str | Path, format: str, codec: str | None, splits: Iterable[str] | None, workers: int,
    options: ConvertOptions | None, mirror: str | None, offline: bool, checksums: str | Path | None,
    download_dir: str | Path | None, shard_size: int, skip_bad: bool, progress: bool | None, executor: str,
    scheduler: str | None, verify: bool, arguments: Mapping[str, str] | None,
) -> Manifest:
    """Download, verify and convert a dataset under the output's lock, deciding again what is left to do.

    Called by :func:`thresher.conversion.upfront.prepare` (``thresher.prepare``), which has checked
    the arguments, states their defaults and meaning, and found the output not already prepared.
    """
    started = time.monotonic()
    recipe = usable_recipe(name).with_arguments(arguments or {})
    storage = get_format(format)
    options = options or ConvertOptions()
    job = Job.of(recipe, storage.name, codec, options, splits, shard_size)
    check_codec(storage.name, [job.schemas[split] for split in job.splits], job.codec)
    schemas, codec_name, channel_order, wanted = job.schemas, job.codec, job.channel_order, job.splits
    root = Path(root)
    out_dir = root / recipe.directory / storage.name
    downloads = Path(download_dir) if download_dir else recipe.download_directory(root)
    out_dir.mkdir(parents=True, exist_ok=True)

    with file_lock(out_dir / LOCK_NAME, timeout=None), walking_each_tar_once(), contextlib.ExitStack() as stack:
        remove_stale_temporaries(out_dir)  # a manifest or stamps file a killed run was writing
        files = download(recipe, downloads, mirror=mirror, offline=offline,
                         checksums=Path(checksums) if checksums else None, progress=progress)
        if recipe.refines_schema:
            recipe = recipe.with_files(files)
            job = Job.of(recipe, storage.name, codec, options, splits, shard_size)
            check_codec(storage.name, [job.schemas[split] for split in job.splits], job.codec)
            schemas = job.schemas
        manifest = job.manifest(source_entries(files) + recipe.local_sources())
        previous = previous_manifest(out_dir)
        if previous is not None:
            recipe.check_output(previous.sources)
        todo, trusted = plan_work(previous, manifest, wanted, out_dir, verify=verify)
        if previous is not None and not todo:
            return reuse(previous, out_dir, wanted, started)
        # Published counts against the files' headers: an error, or with --checksums a warning.
        warnings = {split: compare_counts(recipe, split, files, overridden=checksums is not None) for split in todo}
        plans = {split: EncodePlan(recipe.split_schema(split), schemas[split], options, codec_name, channel_order)
                 for split in todo}
        check_free_space(out_dir, _estimated_output_bytes(recipe, todo, files), "the conversion")
        client = stack.enter_context(connected(scheduler)) if executor == "dask" else None
        setup = WorkerSetup(plans, recipe, dict(files))
        encoders = OrderedPool(encode_work, workers, init_worker, (setup,)) if client is None else None
        if encoders is not None and (recipe.lists_inputs
                                     or any(plan.source_schema != plan.schema for plan in plans.values())):
            encoders.start()  # likely needed: start now, while the first split is listed (it may walk an archive)
        finisher = ShardFinisher()
        pending: list[tuple[str, PendingSplit]] = []
        try:
            if encoders is not None:
                for split in todo:
                    pending.append((split, convert_split(
                        recipe, split, files, storage, plans[split], out_dir, manifest, encoders=encoders,
                        finisher=finisher, trusted=trusted.get(split), shard_size=shard_size, skip_bad=skip_bad,
                        progress=progress,
                    )))
            else:
                ran = convert_splits_on_cluster(client, recipe, todo, files, storage, plans, out_dir, manifest,
                                                shard_size=shard_size, skip_bad=skip_bad, trusted=trusted,
                                                progress=progress)
                for split, (state, split_dir) in ran.items():
                    manifest.splits[split] = split_entry(storage, split_dir, out_dir, state)
            for split, converted in pending:
                manifest.splits[split] = converted.result()
        except BaseException:
            for _, converted in pending:
                converted.abandon()
            if encoders is not None:
                encoders.terminate()
            raise
        finally:
            finisher.close()
            if encoders is not None:
                encoders.close()
        for split in todo:
            manifest.splits[split].warnings = warnings[split]
        switch_to(manifest, out_dir)
        for split in todo:
            remove(out_dir / manifest.generation / split / PROGRESS_NAME)
    manifest.run = RunReport(False, time.monotonic() - started, wanted)
    return manifest


def _estimated_output_bytes(recipe: Recipe, splits: list[str], files: Mapping[str, Path]) -> int:
    """A floor for the space a conversion needs: about the size of its sources."""
    del recipe, splits
    return sum(p.stat().st_size for p in files.values())


# -- one split ------------------------------------------------------------------------------------


def convert_split(
    recipe: Recipe,
    split: str,
    files: Mapping[str, Path],
    storage: StorageFormat,
    plan: EncodePlan,
    out_dir: Path,
    manifest: Manifest,
    *,
    encoders: OrderedPool,
    finisher: ShardFinisher,
    trusted: ProgressState | None,
    shard_size: int,
    skip_bad: bool,
    progress: bool | None,
) -> PendingSplit:
    """Convert one split here, encoding with ``encoders``, resuming after finished shards."""
    split_dir, state = resume_split(out_dir, manifest.generation, split, storage, manifest.fingerprint, trusted)
    start = state.consumed
    inputs = recipe.inputs(split, files)
    # Workers pay when they read inputs themselves or decode and resize; records that only need
    # their codec, from a stream only this process reads, cost more to ship than to encode here.
    parallel = inputs is not None or plan.source_schema != plan.schema
    work = _work(recipe, split, files, inputs, start, unit_size(plan))
    encoded = (unit for done in encoders.map(work, parallel=parallel) for unit in done)

    def shard_done(result: ShardResult) -> None:
        state.record(result.index, result.entry, result.skip_notes)

    sink = ShardSink(storage, split_dir, out_dir, ShardContext(plan.schema, plan.channel_order),
                     manifest.key_format, state.records_per_shard, skip_bad=skip_bad,
                     locate=lambda index: recipe.locate(split, index), on_shard=shard_done,
                     finisher=finisher)
    bar = progress_bar(recipe, split, progress, start)
    waiting: list[Unit] = []  # units before the first good record, while the shard plan is unknown
    try:
        for unit in encoded:
            if sink.per_shard is None:
                waiting.append(unit)
                payload = first_payload(unit)
                if payload is None:
                    continue
                state.records_per_shard = sink.per_shard = records_per_shard(shard_size, payload)
            for ready in waiting or [unit]:
                sink.add(ready)
                if bar is not None:
                    bar.update(len(ready))
            waiting = []
        if waiting:  # nothing but bad records
            state.records_per_shard = sink.per_shard = 1
            for ready in waiting:
                sink.add(ready)
        sink.close_shard()
    except BaseException:
        sink.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    return PendingSplit(sink, storage, split_dir, out_dir, state)


def _work(recipe: Recipe, split: str, files: Mapping[str, Path], inputs: Iterable[Input] | None, start: int,
          size: int) -> Iterator[Unit | Piece]:
    """What the encoders get from ``start`` on: pieces they read themselves when the recipe has
    inputs, else units read here from its single stream."""
    if inputs is None:
        return units(skip_records(recipe.records(split, files), start), start, size, split)
    return InputPlan(inputs).pieces(split, start, size)


class PendingSplit:
    """A converted split whose last shard may still be syncing and hashing on a thread.

    ``prepare`` starts the next split before asking for the result, so that tail overlaps
    with real work instead of ending every split.
    """

    def __init__(self, sink: ShardSink, storage: StorageFormat, split_dir: Path, out_dir: Path,
                 state: ProgressState) -> None:
        self.sink, self.storage, self.split_dir, self.out_dir, self.state = sink, storage, split_dir, out_dir, state

    def result(self) -> SplitEntry:
        try:
            self.sink.finish()
        except BaseException:
            self.sink.abort()
            raise
        return split_entry(self.storage, self.split_dir, self.out_dir, self.state)

    def abandon(self) -> None:
        """After another split failed: let finished shards be recorded, drop the rest."""
        self.sink.abort()


def split_entry(storage: StorageFormat, split_dir: Path, out_dir: Path, state: ProgressState) -> SplitEntry:
    """The manifest entry of a finished split, after writing the files derived from its shards."""
    shard_paths = [out_dir / s.path for s in state.shards]
    extra = [p.relative_to(out_dir).as_posix() for p in storage.write_split_files(split_dir, shard_paths)]
    return SplitEntry(
        records=sum(s.records for s in state.shards),
        bytes=sum(f.bytes for s in state.shards for f in s.files),
        skipped=sum(s.skipped for s in state.shards),
        shards=state.shards, records_per_shard=state.records_per_shard or 0, extra_files=extra,
        skipped_records=state.skip_notes,
    )
