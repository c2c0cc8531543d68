"""What a ``prepare`` run must do, decided before the conversion machinery is imported.

A batch job most often finds its output already prepared. Deciding that from the manifest, the
shard stamps and the sources' verification stamps, with light modules only, lets
``thresher prepare`` and ``thresher.prepare`` (both are :func:`prepare`) answer without importing
codecs, storage libraries, worker pools or Dask; :mod:`thresher.conversion.pipeline` makes the
same decisions through the same functions.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thresher import __version__
from thresher.acquire import download
from thresher.conversion.generations import Stamps, intact_prefix, link_splits, split_intact
from thresher.conversion.progress import PROGRESS_NAME, ProgressState, remove_stale_temporaries
from thresher.errors import ThresherError, UnguardedScriptError, UnsupportedCodecError
from thresher.features import Image
from thresher.fetch.checksums import read_stamp
from thresher.fetch.lock import file_lock
from thresher.formats import uses_codec
from thresher.hashing import hash_file
from thresher.inputs import check_shard_size, check_workers
from thresher.manifest import MANIFEST_NAME, Manifest, RunReport
from thresher.options import ConvertOptions
from thresher.recipe import Recipe
from thresher.registry import usable_recipe
from thresher.schema import Schema
from thresher.transforms import output_schema

log = logging.getLogger("thresher")

LOCK_NAME = ".prepare.lock"
DEFAULT_SHARD_SIZE = 1 << 30


@dataclass(frozen=True)
class Job:
    """What one ``prepare`` call asks for, resolved against its recipe; nothing is read or checked on disk."""

    recipe: Recipe
    format: str
    codec: str | None  # None for a format that stores arrays per field
    schema: Schema  # as stored, after the options
    schemas: dict[str, Schema]  # every split's, as stored
    channel_order: str
    options: ConvertOptions
    splits: list[str]
    shard_size: int

    @classmethod
    def of(cls, recipe: Recipe, format: str, codec: str | None, options: ConvertOptions,
           splits: Iterable[str] | None, shard_size: int) -> Job:
        """Unknown formats and splits are refused here; whether the codec suits the schemas is :func:`check_codec`'s."""
        name = codec_name(recipe, format, codec)  # refuses an unknown format first, as get_format does
        wanted = list(splits) if splits else list(recipe.split_names)
        for split in wanted:
            recipe.split(split)
        schemas = {split: output_schema(recipe.split_schema(split), options) for split in recipe.split_names}
        return cls(recipe, format, name, output_schema(recipe.schema, options), schemas,
                   pixel_order(recipe, list(schemas.values()), options), options, wanted, shard_size)

    def manifest(self, sources: list[dict[str, Any]]) -> Manifest:
        """The manifest this job's output will have, splits still empty, for these sources (:func:`source_entries`)."""
        manifest = Manifest(
            recipe=self.recipe.key, recipe_version=self.recipe.version, format=self.format, codec=self.codec,
            channel_order=self.channel_order, layout=pixel_layout(self.codec),
            key_format=key_format(self.recipe, self.splits), options=self.options.to_json(), schema=self.schema,
            sources=sources, splits={}, created_by=f"thresher {__version__}", shard_size=self.shard_size,
            split_schemas={split: self.schemas[split] for split in self.recipe.own_split_schemas},
        )
        manifest.generation = manifest.generation_name
        return manifest


def prepare(
    name: str,
    *,
    root: str | Path = "datasets",
    format: str = "lmdb",
    codec: str | None = None,
    splits: Iterable[str] | None = None,
    workers: int | str = 1,
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
    arguments: Mapping[str, str] | None = None,
) -> Manifest:
    """Download, verify and convert a dataset; return its manifest. Re-running a finished job does nothing.

    ``manifest.run`` says whether there was anything to do and how long it took;
    ``manifest.summary()`` is the one-paragraph report the CLI prints. ``executor="dask"`` runs
    one task per shard on the Dask cluster at ``scheduler`` (the root must be on a filesystem
    every worker sees); the output is the same as a local run's, byte for byte. An existing
    output is trusted after a check of its files' sizes, or of their hashes with ``verify=True``;
    a split that fails it is written again from its first damaged shard. ``arguments`` go to a
    recipe that reads the user's own files (``{"source": DIR}`` for ``images``).

    This is ``thresher.prepare`` and what ``thresher prepare`` runs: a finished output is
    recognised by :func:`already_prepared` before the converter is imported, so a batch job
    that finds its data ready does not pay for codecs, storage libraries, worker pools or Dask.
    """
    _refuse_a_worker_importing_the_caller()
    if executor not in ("local", "dask"):
        raise ValueError(f"executor must be 'local' or 'dask', not {executor!r}")
    processes = check_workers(workers)
    check_shard_size(shard_size)
    job: dict[str, Any] = dict(
        root=root, format=format, codec=codec, splits=splits, options=options, mirror=mirror, offline=offline,
        checksums=checksums, download_dir=download_dir, shard_size=shard_size, progress=progress, verify=verify,
    )
    # Your own files are the exception: their manifest entry needs the folder listed, which the converter does.
    manifest = None if arguments else already_prepared(name, **job)
    if manifest is not None:
        return manifest
    from thresher.conversion import pipeline

    return pipeline.prepare(name, **job, workers=processes, skip_bad=skip_bad,
                            executor=executor, scheduler=scheduler, arguments=arguments)


def _refuse_a_worker_importing_the_caller() -> None:
    """Stop at once when a worker process, importing the script that started it, reaches its call.

    Worker processes run the top level of the caller's script first (``__name__`` is then
    ``"__mp_main__"``), so a call not kept under ``if __name__ == "__main__":`` would start a
    whole conversion, and workers of its own, inside each worker.
    """
    frame = inspect.currentframe()
    while frame is not None and str(frame.f_globals.get("__name__", "")).split(".")[0] == "thresher":
        frame = frame.f_back
    if frame is not None and frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__mp_main__":
        script = frame.f_globals.get("__file__", "the script that started the workers")
        raise UnguardedScriptError(
            f"{script}: thresher.prepare ran while a worker process imported this script (workers run the "
            f'top level of the script that started them); put the call under `if __name__ == "__main__":`')


def already_prepared(
    name: str, *, root: str | Path, format: str, codec: str | None, splits: Iterable[str] | None,
    options: ConvertOptions | None, mirror: str | None, offline: bool, checksums: str | Path | None,
    download_dir: str | Path | None, shard_size: int, progress: bool | None, verify: bool,
) -> Manifest | None:
    """The existing output's manifest when ``prepare`` with these arguments would have nothing to do, else None.

    It checks what ``prepare`` checks before deciding so (sources present and verified, the same
    fingerprint, every wanted split's shards unchanged, re-hashed with ``verify``), links the split
    paths and reports the run as ``prepare`` does. The codec is not checked against the schemas
    again: an output of the same fingerprint passed that check when it was written. On None, call
    ``prepare``: it decides again under its own lock, since another process may have changed the
    output in between.
    """
    started = time.monotonic()
    recipe = usable_recipe(name)
    job = Job.of(recipe, format, codec, options or ConvertOptions(), splits, shard_size)
    out_dir = Path(root) / recipe.directory / format
    if not (out_dir / MANIFEST_NAME).exists():
        return None  # nothing to reuse: no lock, no download here
    with file_lock(out_dir / LOCK_NAME, timeout=None):
        remove_stale_temporaries(out_dir)  # a manifest or stamps file a killed run was writing
        previous = previous_manifest(out_dir)
        if previous is None or (previous.fingerprint != job.manifest(previous.sources).fingerprint
                                and not recipe.refines_schema):
            return None  # other options than the output's, before any download: prepare refuses or converts
        downloads = Path(download_dir) if download_dir else recipe.download_directory(root)
        files = download(recipe, downloads, mirror=mirror, offline=offline,
                         checksums=Path(checksums) if checksums else None, progress=progress)
        if recipe.refines_schema:  # its schema follows from the files: compare once they are verified
            job = Job.of(recipe.with_files(files), format, codec, options or ConvertOptions(), splits, shard_size)
        if not nothing_to_do(previous, job.manifest(source_entries(files)), job.splits, out_dir, verify=verify):
            return None
        return reuse(previous, out_dir, job.splits, started)


def reuse(previous: Manifest, out_dir: Path, wanted: list[str], started: float) -> Manifest:
    """Nothing to do: point the split paths at the existing output and report the run as such."""
    log.info("%s: already prepared in %s, nothing to do", previous.recipe, out_dir)
    link_splits(previous, out_dir)
    previous.run = RunReport(True, time.monotonic() - started, wanted)
    return previous


def codec_name(recipe: Recipe, format: str, codec: str | None) -> str | None:
    """The codec a run uses; for a format without codecs whatever was asked (:func:`check_codec` refuses it)."""
    return codec or recipe.default_codec if uses_codec(format) else codec


def check_codec(format: str, schemas: list[Schema], codec: str | None) -> None:
    """Refuse a codec the format or a split's schema cannot take, before anything is downloaded."""
    if not uses_codec(format):
        if codec is not None:
            raise UnsupportedCodecError(
                f"{format} stores arrays per field, not codec values; leave out --codec {codec}"
            )
        from thresher.formats.hdf5_format import check_schema

        for schema in schemas:
            check_schema(schema)
        return
    from thresher.codecs import get_codec

    for schema in schemas:
        get_codec(codec).check(schema)


def pixel_order(recipe: Recipe, schemas: list[Schema], options: ConvertOptions) -> str:
    """Channel order of stored raw pixels: the Caffe tool's for this data unless asked otherwise."""
    images = [f for schema in schemas for f in schema if type(f) is Image]  # photos; label maps have no order
    if not images:
        return "NONE"
    if all(f.shape is not None and f.shape[2] == 1 for f in images):
        return "GRAY"
    return options.channel_order or recipe.channel_order


def pixel_layout(codec: str | None) -> str:
    return "HWC" if codec == "tensorprotos" else "CHW"


def key_format(recipe: Recipe, splits: Iterable[str]) -> str:
    """``%08d`` like the Caffe converters, wider only if a split has 10^8 records or more."""
    most = max((recipe.split(s).num_records for s in splits), default=0)
    return f"%0{max(8, len(str(max(most - 1, 0))))}d"


def source_entries(files: Mapping[str, Path]) -> list[dict[str, Any]]:
    """Size and sha256 of each source for the manifest; the download's verification stamp saves a re-read."""
    return [source_entry(filename, path) for filename, path in sorted(files.items())]


def source_entry(filename: str, path: Path) -> dict[str, Any]:
    stamp = read_stamp(path)
    digest = stamp.sha256 if stamp is not None else hash_file(path).sha256
    return {"filename": filename, "bytes": path.stat().st_size, "sha256": digest}


def previous_manifest(out_dir: Path) -> Manifest | None:
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
        if _intact(previous, split, out_dir, verify, stamps):
            manifest.splits[split] = previous.splits[split]
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


def nothing_to_do(previous: Manifest, manifest: Manifest, wanted: list[str], out_dir: Path, *, verify: bool) -> bool:
    """:func:`plan_work` would find no split to convert; stops at the first that fails, and warns of none."""
    stamps = Stamps(out_dir)
    return previous.fingerprint == manifest.fingerprint and all(
        _intact(previous, split, out_dir, verify, stamps) for split in wanted)


def _intact(previous: Manifest, split: str, out_dir: Path, verify: bool, stamps: Stamps) -> bool:
    entry = previous.splits.get(split)
    return entry is not None and split_intact(out_dir, entry, verify=verify, stamps=stamps)
