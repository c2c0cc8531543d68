"""The conversion pipeline: recipe → records → (options) → codec → writer → manifest.

Work is split into shards of a target size. Each finished shard is renamed into place and
noted in ``<split>/.progress.json``, so a killed run resumes after its last finished shard
and ends with the same bytes as an uninterrupted one. The manifest is written last.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from thresher import __version__, transforms
from thresher.acquire import download
from thresher.atomic import check_free_space, place, remove, temporary_name, write_bytes_atomic
from thresher.codecs import get_codec
from thresher.errors import ThresherError, UnsupportedCodecError
from thresher.executors import ordered_map
from thresher.fetch.lock import file_lock
from thresher.formats import ShardContext, StorageFormat, get_format
from thresher.formats.hdf5_format import check_schema as check_hdf5_schema
from thresher.manifest import MANIFEST_NAME, Manifest, RunReport, ShardEntry, SplitEntry, file_entry
from thresher.recipe import WHERE, BadRecord, Recipe, Record
from thresher.registry import get_recipe
from thresher.schema import Field, Schema
from thresher.transforms import ConvertOptions

log = logging.getLogger("thresher")

DEFAULT_SHARD_SIZE = 1 << 30
CHUNK_RECORDS = 256
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
) -> Manifest:
    """Download, verify and convert a dataset; return its manifest. Re-running a finished job does nothing.

    ``manifest.run`` says whether there was anything to do and how long it took;
    ``manifest.summary()`` is the one-paragraph report the CLI prints.
    """
    started = time.monotonic()
    recipe = get_recipe(name)
    storage = get_format(format)
    options = options or ConvertOptions()
    schema = transforms.output_schema(recipe.schema, options)
    codec_name = choose_codec(recipe, storage, schema, codec)
    channel_order = pixel_order(recipe, schema, options)
    wanted = list(splits) if splits else list(recipe.split_names)
    for split in wanted:
        recipe.split(split)
    root = Path(root)
    out_dir = root / recipe.name / storage.name
    downloads = Path(download_dir) if download_dir else root / recipe.name / "downloads"
    out_dir.mkdir(parents=True, exist_ok=True)

    with file_lock(out_dir / ".prepare.lock", timeout=None):
        files = download(recipe, downloads, mirror=mirror, offline=offline,
                         checksums=Path(checksums) if checksums else None, progress=progress)
        manifest = Manifest(
            recipe=recipe.name, recipe_version=recipe.version, format=storage.name, codec=codec_name,
            channel_order=channel_order, layout=pixel_layout(codec_name, storage),
            key_format=key_format(recipe, wanted), options=options.to_json(), schema=schema,
            sources=[source_entry(fn, path) for fn, path in sorted(files.items())],
            splits={}, created_by=f"thresher {__version__}",
        )
        previous = _previous_manifest(out_dir)
        if previous is not None and previous.fingerprint == manifest.fingerprint:
            manifest.splits = {k: v for k, v in previous.splits.items() if k not in wanted}
            if all(s in previous.splits and _split_intact(out_dir, previous.splits[s]) for s in wanted):
                log.info("%s: already prepared in %s, nothing to do", recipe.name, out_dir)
                previous.run = RunReport(True, time.monotonic() - started, wanted)
                return previous
        plan = EncodePlan(recipe.schema, schema, options, codec_name, channel_order)
        check_free_space(out_dir, _estimated_output_bytes(recipe, wanted, files), "the conversion")
        for split in wanted:
            manifest.splits[split] = convert_split(
                recipe, split, files, storage, plan, out_dir, manifest,
                workers=workers, shard_size=shard_size, skip_bad=skip_bad, progress=progress,
            )
        manifest.write(out_dir)
        for split in wanted:
            remove(out_dir / split / PROGRESS_NAME)
    manifest.run = RunReport(False, time.monotonic() - started, wanted)
    return manifest


def choose_codec(recipe: Recipe, storage: StorageFormat, schema: Schema, codec: str | None) -> str | None:
    if not storage.uses_codec:
        if codec is not None:
            raise UnsupportedCodecError(
                f"{storage.name} stores arrays per field, not codec values; leave out --codec {codec}"
            )
        check_hdf5_schema(schema)
        return None
    name = codec or recipe.default_codec
    get_codec(name).check(schema)
    return name


def pixel_order(recipe: Recipe, schema: Schema, options: ConvertOptions) -> str:
    """Channel order of stored raw pixels: the Caffe tool's for this data unless asked otherwise."""
    images = schema.of_kind("image")
    if not images:
        return "NONE"
    if images[0].shape is not None and images[0].shape[2] == 1:
        return "GRAY"
    return options.channel_order or recipe.channel_order


def pixel_layout(codec: str | None, storage: StorageFormat) -> str:
    return "HWC" if codec == "tensorprotos" else "CHW"


def key_format(recipe: Recipe, splits: Iterable[str]) -> str:
    """``%08d`` like the Caffe converters, wider only if a split has 10^8 records or more."""
    most = max((recipe.split(s).num_records for s in splits), default=0)
    return f"%0{max(8, len(str(max(most - 1, 0))))}d"


def source_entry(filename: str, path: Path) -> dict[str, Any]:
    from thresher.manifest import sha256_file

    return {"filename": filename, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _previous_manifest(out_dir: Path) -> Manifest | None:
    if not (out_dir / MANIFEST_NAME).exists():
        return None
    try:
        return Manifest.read(out_dir)
    except ThresherError:
        return None


def _split_intact(out_dir: Path, entry: SplitEntry) -> bool:
    """Cheap check that a finished split is still there (sizes); ``thresher verify`` re-hashes."""
    files = [f for shard in entry.shards for f in shard.files]
    return all((out_dir / f).is_file() for f in entry.extra_files) and all((out_dir / f.path).is_file() and (out_dir / f.path).stat().st_size == f.bytes for f in files)


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
    workers: int,
    shard_size: int,
    skip_bad: bool,
    progress: bool | None,
) -> SplitEntry:
    split_dir = out_dir / split
    split_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(split_dir)
    state = ProgressState.load(split_dir, manifest.fingerprint)
    _remove_unfinished_shards(split_dir, storage, state)
    context = ShardContext(plan.schema, plan.channel_order)
    consumed_before = sum(s.consumed for s in state.shards)
    records = itertools.islice(recipe.records(split, files), consumed_before, None)
    encoded = ordered_map(
        _encode_chunk, _chunks(records, consumed_before), workers=workers,
        initializer=_init_worker, initargs=(plan,),
    )
    writer_state = _ShardRoll(storage, split_dir, out_dir, context, state, shard_size, manifest.key_format)
    bar = _progress_bar(recipe, split, progress, sum(s.records for s in state.shards))
    index = consumed_before
    try:
        for chunk in encoded:
            for item in chunk:
                if isinstance(item, BadRecord):
                    if not item.source:
                        item = replace(item, source=recipe.locate(split, index))
                    if not skip_bad:
                        raise item.error()
                    writer_state.skip(item)
                else:
                    writer_state.append(item)
                    if bar is not None:
                        bar.update(1)
                index += 1
        writer_state.finish()
    except BaseException:
        writer_state.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    shard_paths = [out_dir / s.path for s in state.shards]
    extra = [p.relative_to(out_dir).as_posix() for p in storage.write_split_files(split_dir, shard_paths)]
    return SplitEntry(
        records=sum(s.records for s in state.shards),
        bytes=sum(f.bytes for s in state.shards for f in s.files),
        skipped=sum(s.skipped for s in state.shards),
        shards=state.shards, extra_files=extra, skipped_records=state.skip_notes[:MAX_SKIP_NOTES],
    )


@dataclass
class ProgressState:
    """Finished shards of an interrupted run, kept only if they were made with the same fingerprint."""

    path: Path
    fingerprint: dict[str, Any]
    shards: list[ShardEntry] = field(default_factory=list)
    skip_notes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, split_dir: Path, fingerprint: dict[str, Any]) -> ProgressState:
        import json

        path = split_dir / PROGRESS_NAME
        state = cls(path, fingerprint)
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return state
        if data.get("fingerprint") != fingerprint:
            return state
        shards = [ShardEntry.from_json(s) for s in data.get("shards", [])]
        base = split_dir.parent
        for shard in shards:
            if not all((base / f.path).is_file() and (base / f.path).stat().st_size == f.bytes for f in shard.files):
                break
            state.shards.append(shard)
        state.skip_notes = list(data.get("skip_notes", []))
        return state

    def save(self) -> None:
        import json
        from dataclasses import asdict

        data = {"fingerprint": self.fingerprint, "shards": [asdict(s) for s in self.shards],
                "skip_notes": self.skip_notes[:MAX_SKIP_NOTES]}
        write_bytes_atomic(self.path, json.dumps(data, indent=1).encode())


class _ShardRoll:
    """Feeds payloads to the current shard writer and starts a new shard past the target size."""

    def __init__(self, storage: StorageFormat, split_dir: Path, out_dir: Path, context: ShardContext,
                 state: ProgressState, shard_size: int, key_format: str) -> None:
        self.storage = storage
        self.split_dir = split_dir
        self.out_dir = out_dir
        self.context = context
        self.state = state
        self.shard_size = shard_size
        self.key_format = key_format
        self.next_key = sum(s.records for s in state.shards)
        self.writer = None
        self.tmp: Path | None = None
        self.first_key = ""
        self.consumed = 0
        self.skipped = 0

    def _open(self) -> None:
        final = self.split_dir / self.storage.shard_name(len(self.state.shards))
        self.tmp = temporary_name(final)
        remove(self.tmp)
        self.writer = self.storage.writer(self.tmp, self.context)
        self.first_key = self.key_format % self.next_key
        self.consumed = 0
        self.skipped = 0

    def append(self, payload: Any) -> None:
        if self.writer is None:
            self._open()
        key = (self.key_format % self.next_key).encode()
        self.writer.append(key, payload)
        self.next_key += 1
        self.consumed += 1
        if self.writer.bytes >= self.shard_size:
            self._close_shard()

    def skip(self, bad: BadRecord) -> None:
        if self.writer is None:
            self._open()
        self.consumed += 1
        self.skipped += 1
        self.state.skip_notes.append(str(bad.error()))
        log.warning("skipped bad record: %s", bad.error())

    def _close_shard(self) -> None:
        assert self.writer is not None and self.tmp is not None
        writer, tmp = self.writer, self.tmp
        writer.close()
        final = self.split_dir / self.storage.shard_name(len(self.state.shards))
        place(tmp, final)
        shard_files = sorted(p for p in final.rglob("*") if p.is_file()) if final.is_dir() else [final]
        self.state.shards.append(ShardEntry(
            path=final.relative_to(self.out_dir).as_posix(), records=writer.records,
            first_key=self.first_key, consumed=self.consumed, skipped=self.skipped,
            files=[file_entry(self.out_dir, p) for p in shard_files],
        ))
        self.state.save()
        self.writer = None
        self.tmp = None

    def finish(self) -> None:
        if self.writer is not None:
            self._close_shard()

    def abort(self) -> None:
        """Best effort after a failure: the original error is what the user must see."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.abort()
            if self.tmp is not None:
                remove(self.tmp)
            self.writer = None


def _remove_stale_temporaries(split_dir: Path) -> None:
    """Temporaries of a killed run (we hold the lock, so no live process owns them)."""
    for path in split_dir.glob(".*.tmp-*"):
        remove(path)


def _remove_unfinished_shards(split_dir: Path, storage: StorageFormat, state: ProgressState) -> None:
    keep = {split_dir.parent / s.path for s in state.shards}
    index = len(state.shards)
    while True:
        candidate = split_dir / storage.shard_name(index)
        if not candidate.exists():
            break
        if candidate not in keep:
            remove(candidate)
        index += 1


def _progress_bar(recipe: Recipe, split: str, progress: bool | None, initial: int) -> Any:
    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=recipe.split(split).num_records, initial=initial, unit="rec",
                desc=f"{recipe.name}/{split}", leave=False)


# -- worker side ------------------------------------------------------------------------------------

_PLAN: EncodePlan | None = None
_CODEC: Any = None


def _init_worker(plan: EncodePlan) -> None:
    global _PLAN, _CODEC
    _PLAN = plan
    _CODEC = get_codec(plan.codec) if plan.codec else None


def _chunks(records: Iterator[Record | BadRecord], start: int) -> Iterator[list[tuple[int, Record | BadRecord]]]:
    index = start
    while True:
        chunk = list(itertools.islice(records, CHUNK_RECORDS))
        if not chunk:
            return
        yield list(enumerate(chunk, index))
        index += len(chunk)


def _encode_chunk(chunk: list[tuple[int, Record | BadRecord]]) -> list[Any]:
    assert _PLAN is not None
    return [encode_record(_PLAN, _CODEC, index, record) for index, record in chunk]


def encode_record(plan: EncodePlan, codec: Any, index: int, record: Record | BadRecord) -> Any:
    """One record to its stored payload (bytes for codecs, the record for HDF5) or a BadRecord."""
    if isinstance(record, BadRecord):
        return record
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


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))
