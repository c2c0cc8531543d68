"""Preparing on a Dask cluster: one task per shard, the manifest assembled by the client.

Every worker must see the data root at the same path (a shared filesystem). A task writes
the records of its shard (source indexes ``[k*R, (k+1)*R)``) under a temporary name and
renames it when complete, so a failed or retried task never leaves a partial shard under a
final name. Because a shard's bytes depend only on its records, the output equals a local
run byte for byte.

For a recipe with inputs, the client lists them once and hands each task the inputs that
hold its records (a :class:`~thresher.conversion.pieces.Piece`): all tasks together read
about the split once. A recipe that is one stream (one compressed file) has no such
division: each task reads it from the start up to its shard, so the work grows with the
square of the number of shards; such recipes say so.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thresher.codecs import get_codec
from thresher.conversion.convert import (
    EncodePlan,
    encode_with,
    first_payload,
    records_per_shard,
    skip_records,
    take_records,
    units,
)
from thresher.conversion.pieces import InputPlan, Piece, read_piece
from thresher.conversion.progress import ProgressState, progress_bar, remove_stale_temporaries, resume_split
from thresher.conversion.sink import ShardResult, ShardSink, write_shard_from
from thresher.formats import ShardContext, StorageFormat, get_format
from thresher.manifest import Manifest
from thresher.recipe import Recipe
from thresher.registry import get_recipe

log = logging.getLogger("thresher")

TASK_RETRIES = 2


@dataclass(frozen=True)
class ShardTask:
    """What a worker needs to write any shard of one split; small and picklable."""

    recipe: str
    split: str
    files: dict[str, str]
    format: str
    plan: EncodePlan
    out_dir: str
    generation: str
    key_format: str
    per_shard: int
    skip_bad: bool
    arguments: dict[str, str] = field(default_factory=dict)  # the recipe's user arguments


@contextlib.contextmanager
def connected(scheduler: str | None) -> Iterator[Any]:
    """A ``distributed.Client`` for the scheduler address (the ``dask`` extra).

    The caller's own client of that scheduler, if it has one, is used and left open: a second
    client in the same process received finished results seconds late.
    """
    try:
        from distributed import Client, default_client
    except ImportError as exc:
        raise ImportError("--executor dask needs Dask: pip install 'thresher[dask]'") from exc
    if not scheduler:
        raise ValueError("--executor dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.5:8786)")
    try:
        current = default_client()
    except ValueError:  # none in this process
        current = None
    if current is not None and current.status == "running" and current.scheduler.address == scheduler:
        yield current
        return
    with Client(scheduler) as client:
        yield client


def run_shard(task: ShardTask, shard: int, piece: Piece | None = None) -> ShardResult | None:
    """Runs on a worker: write shard ``shard`` from ``piece`` (its inputs) or from the recipe's
    stream; return None when the split ends before it."""
    recipe = get_recipe(task.recipe).with_arguments(task.arguments)
    storage = get_format(task.format)
    out_dir = Path(task.out_dir)
    files = {name: Path(path) for name, path in task.files.items()}
    start = shard * task.per_shard
    if piece is not None:
        records = read_piece(recipe, files, piece)
    else:
        records = take_records(skip_records(recipe.records(task.split, files), start), task.per_shard)
    sink = ShardSink(storage, out_dir / task.generation / task.split, out_dir, ShardContext(task.plan.schema, task.plan.channel_order),
                     task.key_format, task.per_shard, skip_bad=task.skip_bad,
                     locate=lambda index: recipe.locate(task.split, index))
    return write_shard_from(records, sink, task.plan, start)


def plan_records_per_shard(recipe: Recipe, split: str, files: Mapping[str, Path], plan: EncodePlan,
                           shard_size: int) -> int:
    """Records per shard from the first good record, exactly as a local run would plan it."""
    codec = get_codec(plan.codec) if plan.codec else None
    for unit in units(recipe.records(split, files), size=1):  # read no further than the first good record
        payload = first_payload(encode_with(plan, codec, unit))
        if payload is not None:
            return records_per_shard(shard_size, payload)
    return 1


class _SplitJob:
    """The shard tasks of one split: which to submit next, and the results noted in order."""

    def __init__(self, recipe: Recipe, split: str, files: Mapping[str, Path], storage: StorageFormat,
                 plan: EncodePlan, out_dir: Path, manifest: Manifest, *, shard_size: int, skip_bad: bool,
                 trusted: ProgressState | None, progress: bool | None) -> None:
        self.split = split
        self.split_dir, self.state = resume_split(out_dir, manifest.generation, split, storage, manifest.fingerprint,
                                                  trusted)
        per_shard = self.state.records_per_shard or plan_records_per_shard(recipe, split, files, plan, shard_size)
        self.state.records_per_shard = self.per_shard = per_shard
        self.task = ShardTask(recipe.key, split, {k: str(v) for k, v in files.items()}, storage.name, plan,
                              str(out_dir), manifest.generation, manifest.key_format, per_shard, skip_bad,
                              dict(recipe.arguments))
        listed = recipe.inputs(split, files)
        self.inputs = InputPlan(listed) if listed is not None else None
        # The first shard past the end of the split: known from the inputs, or once a task finds it.
        self.end: int | None = None if self.inputs is None else -(-self.inputs.total // per_shard)
        self.next_shard = len(self.state.shards)
        self.results: dict[int, ShardResult | None] = {}
        self.key = f"thresher-{recipe.name}-{split}-{manifest.format}-shard-"
        self.bar = progress_bar(recipe, split, progress, self.state.consumed)

    def take(self) -> tuple[int, Piece | None] | None:
        """The next shard to submit and its inputs, or None when every shard of the split is out."""
        shard = self.next_shard
        if self.end is not None and shard >= self.end:
            return None
        self.next_shard += 1
        piece = None if self.inputs is None else self.inputs.piece(
            self.split, shard * self.per_shard, (shard + 1) * self.per_shard)
        return shard, piece

    def done(self, shard: int, result: ShardResult | None) -> None:
        self.results[shard] = result
        if self.bar is not None and result is not None:
            self.bar.update(result.entry.consumed)
        if result is None:
            self.end = shard if self.end is None else min(self.end, shard)
        elif result.entry.consumed < self.per_shard:
            self.end = shard + 1 if self.end is None else min(self.end, shard + 1)
        _record_in_order(self.state, self.results, self.end)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def finish(self) -> tuple[ProgressState, Path]:
        end = len(self.state.shards) if self.end is None else self.end
        missing = [k for k in range(len(self.state.shards), end) if self.results.get(k) is None]
        if missing:
            raise RuntimeError(f"{self.split_dir}: shard tasks {missing} returned no shard inside the split")
        remove_stale_temporaries(self.split_dir)  # left by tasks that died and were retried elsewhere
        return self.state, self.split_dir


def convert_splits_on_cluster(
    client: Any,
    recipe: Recipe,
    splits: list[str],
    files: Mapping[str, Path],
    storage: StorageFormat,
    plans: Mapping[str, EncodePlan],
    out_dir: Path,
    manifest: Manifest,
    *,
    shard_size: int,
    skip_bad: bool,
    trusted: Mapping[str, ProgressState] | None = None,
    progress: bool | None = None,
) -> dict[str, tuple[ProgressState, Path]]:
    """Run the shard tasks of every split through one window, so no split waits for another's
    last shard; each resumes after the shards a previous run finished."""
    from distributed import as_completed

    trusted = trusted or {}
    later = iter(splits)  # a split is planned (its inputs listed) when its turn comes, not all up front
    jobs: list[_SplitJob] = []
    window = max(2, 2 * len(client.scheduler_info().get("workers", {})))
    owners: dict[str, tuple[_SplitJob, int]] = {}
    futures: list[Any] = []
    pending = as_completed([], with_results=True)

    def submit_next() -> bool:
        while True:
            for job in jobs:
                taken = job.take()
                if taken is not None:
                    shard, piece = taken
                    key = f"{job.key}{shard:05d}"
                    owners[key] = (job, shard)
                    futures.append(client.submit(run_shard, job.task, shard, piece, retries=TASK_RETRIES,
                                                 pure=False, key=key))
                    pending.add(futures[-1])
                    return True
            split = next(later, None)
            if split is None:
                return False
            jobs.append(_SplitJob(recipe, split, files, storage, plans[split], out_dir, manifest,
                                  shard_size=shard_size, skip_bad=skip_bad, trusted=trusted.get(split),
                                  progress=progress))

    try:
        while len(owners) < window and submit_next():
            pass
        for future, result in pending:
            job, shard = owners[future.key]
            job.done(shard, result)
            submit_next()
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        for job in jobs:
            job.close()
    return {job.split: job.finish() for job in jobs}


def _record_in_order(state: ProgressState, results: dict[int, ShardResult | None], end: int | None) -> None:
    """Note finished shards in the progress file as soon as all before them are done (for resume)."""
    while (k := len(state.shards)) in results and (end is None or k < end):
        result = results[k]
        if result is None:
            break
        state.record(k, result.entry, result.skip_notes)
