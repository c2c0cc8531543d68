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

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from thresher import __version__, transforms
from thresher.acquire import download
from thresher.atomic import check_free_space, remove
from thresher.codecs import get_codec
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
from thresher.conversion.distributed import connect, convert_splits_on_cluster
from thresher.conversion.executors import OrderedPool
from thresher.conversion.generations import Stamps, intact_prefix, link_splits, split_intact, switch_to
from thresher.conversion.pieces import InputPlan, Piece
from thresher.conversion.progress import PROGRESS_NAME, ProgressState, progress_bar, resume_split
from thresher.conversion.sink import ShardFinisher, ShardResult, ShardSink
from thresher.errors import ThresherError, UnsupportedCodecError
from thresher.features import Image
from thresher.fetch.checksums import read_stamp
from thresher.fetch.lock import file_lock
from thresher.formats import ShardContext, StorageFormat, get_format
from thresher.formats.hdf5_format import check_schema as check_hdf5_schema
from thresher.hashing import hash_file
from thresher.inputs import check_shard_size, check_workers
from thresher.manifest import MANIFEST_NAME, Manifest, RunReport, SplitEntry
from thresher.published import compare_counts
from thresher.recipe import Recipe
from thresher.registry import usable_recipe
from thresher.schema import Schema
from thresher.sources.archive import walking_each_tar_once
from thresher.transforms import ConvertOptions

log = logging.getLogger("thresher")

DEFAULT_SHARD_SIZE = 1 << 30


def prepare(
    name: str,
    *,
    root: str | Path = "datasets",
    format: str = "lmdb",
    codec: str | None = None,
    splits: Iterable[str] | None = None,
    workers: int = 1,
    options: ConvertOptions | None = None,
    mirror: str | None = None,
    offline: bool = False,
    checksums: str | Path | None = None,
    download_dir: str | Path | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    skip_bad: bool = False,
    progress: bool | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    verify: bool = False,
) -> Manifest:
    """Download, verify and convert a dataset; return its manifest. Re-running a finished job does nothing.

    ``manifest.run`` says whether there was anything to do and how long it took;
    ``manifest.summary()`` is the one-paragraph report the CLI prints. ``executor="dask"`` runs
    one task per shard on the Dask cluster at ``scheduler`` (the root must be on a filesystem
    every worker sees); the output is the same as a local run's, byte for byte. An existing
    output is trusted after a check of its files' sizes, or of their hashes with ``verify=True``;
    a split that fails it is written again from its first damaged shard.
    """
    if executor not in ("local", "dask"):
        raise ValueError(f"executor must be 'local' or 'dask', not {executor!r}")
    check_workers(workers)
    check_shard_size(shard_size)
    started = time.monotonic()
    recipe = usable_recipe(name)
    storage = get_format(format)
    options = options or ConvertOptions()
    wanted = list(splits) if splits else list(recipe.split_names)
    for split in wanted:
        recipe.split(split)
    schema = transforms.output_schema(recipe.schema, options)
    schemas = {split: transforms.output_schema(recipe.split_schema(split), options) for split in recipe.split_names}
    codec_name = choose_codec(recipe, storage, [schemas[split] for split in wanted], codec)
    channel_order = pixel_order(recipe, list(schemas.values()), options)
    root = Path(root)
    out_dir = root / recipe.key / storage.name
    downloads = Path(download_dir) if download_dir else root / recipe.key / "downloads"
    out_dir.mkdir(parents=True, exist_ok=True)

    with file_lock(out_dir / ".prepare.lock", timeout=None), walking_each_tar_once():
        files = download(recipe, downloads, mirror=mirror, offline=offline,
                         checksums=Path(checksums) if checksums else None, progress=progress)
        manifest = Manifest(
            recipe=recipe.key, recipe_version=recipe.version, format=storage.name, codec=codec_name,
            channel_order=channel_order, layout=pixel_layout(codec_name, storage),
            key_format=key_format(recipe, wanted), options=options.to_json(), schema=schema,
            sources=[source_entry(fn, path) for fn, path in sorted(files.items())],
            splits={}, created_by=f"thresher {__version__}", shard_size=shard_size,
            split_schemas={split: schemas[split] for split in recipe.own_split_schemas},
        )
        manifest.generation = manifest.generation_name
        previous = _previous_manifest(out_dir)
        todo, trusted = plan_work(previous, manifest, wanted, out_dir, verify=verify)
        if previous is not None and not todo:
            log.info("%s: already prepared in %s, nothing to do", recipe.key, out_dir)
            link_splits(previous, out_dir)
            previous.run = RunReport(True, time.monotonic() - started, wanted)
            return previous
        # Published counts against the files' headers: an error, or with --checksums a warning.
        warnings = {split: compare_counts(recipe, split, files, overridden=checksums is not None) for split in todo}
        plans = {split: EncodePlan(recipe.split_schema(split), schemas[split], options, codec_name, channel_order)
                 for split in todo}
        check_free_space(out_dir, _estimated_output_bytes(recipe, todo, files), "the conversion")
        client = connect(scheduler) if executor == "dask" else None
        setup = WorkerSetup(plans, recipe, dict(files))
        encoders = OrderedPool(encode_work, workers, init_worker, (setup,)) if client is None else None
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
            if client is not None:
                client.close()
            if encoders is not None:
                encoders.close()
        for split in todo:
            manifest.splits[split].warnings = warnings[split]
        switch_to(manifest, out_dir)
        for split in todo:
            remove(out_dir / manifest.generation / split / PROGRESS_NAME)
    manifest.run = RunReport(False, time.monotonic() - started, wanted)
    return manifest


def choose_codec(recipe: Recipe, storage: StorageFormat, schemas: list[Schema], codec: str | None) -> str | None:
    """The codec for the splits of ``schemas``, checked against each of them."""
    if not storage.uses_codec:
        if codec is not None:
            raise UnsupportedCodecError(
                f"{storage.name} stores arrays per field, not codec values; leave out --codec {codec}"
            )
        for schema in schemas:
            check_hdf5_schema(schema)
        return None
    name = codec or recipe.default_codec
    for schema in schemas:
        get_codec(name).check(schema)
    return name


def pixel_order(recipe: Recipe, schemas: list[Schema], options: ConvertOptions) -> str:
    """Channel order of stored raw pixels: the Caffe tool's for this data unless asked otherwise."""
    images = [f for schema in schemas for f in schema if type(f) is Image]  # photos; label maps have no order
    if not images:
        return "NONE"
    if all(f.shape is not None and f.shape[2] == 1 for f in images):
        return "GRAY"
    return options.channel_order or recipe.channel_order


def pixel_layout(codec: str | None, storage: StorageFormat) -> str:
    return "HWC" if codec == "tensorprotos" else "CHW"


def key_format(recipe: Recipe, splits: Iterable[str]) -> str:
    """``%08d`` like the Caffe converters, wider only if a split has 10^8 records or more."""
    most = max((recipe.split(s).num_records for s in splits), default=0)
    return f"%0{max(8, len(str(max(most - 1, 0))))}d"


def source_entry(filename: str, path: Path) -> dict[str, Any]:
    """Size and sha256 of a source for the manifest; the download's verification stamp saves a re-read."""
    stamp = read_stamp(path)
    digest = stamp.sha256 if stamp is not None else hash_file(path).sha256
    return {"filename": filename, "bytes": path.stat().st_size, "sha256": digest}


def _previous_manifest(out_dir: Path) -> Manifest | None:
    if not (out_dir / MANIFEST_NAME).exists():
        return None
    try:
        return Manifest.read(out_dir)
    except ThresherError:
        return None


def plan_work(previous: Manifest | None, manifest: Manifest, wanted: list[str], out_dir: Path, *, verify: bool
              ) -> tuple[list[str], dict[str, ProgressState]]:
    """The splits to convert, and for a damaged finished split the shards that are still good.

    A previous output of the same fingerprint keeps its other splits and its intact ones; one
    of other options is replaced whole (a new generation), so none of it is kept.
    """
    if previous is None or previous.fingerprint != manifest.fingerprint:
        return list(wanted), {}
    manifest.splits = {k: v for k, v in previous.splits.items() if k not in wanted}
    todo: list[str] = []
    trusted: dict[str, ProgressState] = {}
    stamps = Stamps(out_dir)
    for split in wanted:
        entry = previous.splits.get(split)
        if entry is not None and split_intact(out_dir, entry, verify=verify, stamps=stamps):
            manifest.splits[split] = entry
            continue
        todo.append(split)
        if entry is not None:
            good = entry.shards[:intact_prefix(out_dir, entry, verify=verify, stamps=stamps)]
            log.warning("%s/%s: %d of %d shards no longer match the manifest; writing the rest again",
                        out_dir, split, len(entry.shards) - len(good), len(entry.shards))
            trusted[split] = ProgressState(out_dir / manifest.generation / split / PROGRESS_NAME,
                                           manifest.fingerprint, entry.records_per_shard, list(good),
                                           [[] for _ in good])
    return todo, trusted


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
    encoded = (unit for done in encoders.map(_work(recipe, split, files, start, unit_size(plan))) for unit in done)

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


def _work(recipe: Recipe, split: str, files: Mapping[str, Path], start: int, size: int) -> Iterator[Unit | Piece]:
    """What the encoders get from ``start`` on: pieces they read themselves when the recipe has
    inputs, else units read here from its single stream."""
    inputs = recipe.inputs(split, files)
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
