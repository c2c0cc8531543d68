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

import logging
from collections.abc import Mapping
from dataclasses import dataclass
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
from thresher.conversion.progress import ProgressState, remove_stale_temporaries, resume_split
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


def connect(scheduler: str | None) -> Any:
    """A ``distributed.Client`` for the scheduler address (the ``dask`` extra)."""
    try:
        from distributed import Client
    except ImportError as exc:
        raise ImportError("--executor dask needs Dask: pip install 'thresher[dask]'") from exc
    if not scheduler:
        raise ValueError("--executor dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.5:8786)")
    return Client(scheduler)


def run_shard(task: ShardTask, shard: int, piece: Piece | None = None) -> ShardResult | None:
    """Runs on a worker: write shard ``shard`` from ``piece`` (its inputs) or from the recipe's
    stream; return None when the split ends before it."""
    recipe = get_recipe(task.recipe)
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


def convert_split_on_cluster(
    client: Any,
    recipe: Recipe,
    split: str,
    files: Mapping[str, Path],
    storage: StorageFormat,
    plan: EncodePlan,
    out_dir: Path,
    manifest: Manifest,
    *,
    shard_size: int,
    skip_bad: bool,
    trusted: ProgressState | None = None,
) -> tuple[ProgressState, Path]:
    """Run the shard tasks of one split; resumes after shards a previous run finished."""
    from distributed import as_completed

    split_dir, state = resume_split(out_dir, manifest.generation, split, storage, manifest.fingerprint, trusted)
    per_shard = state.records_per_shard or plan_records_per_shard(recipe, split, files, plan, shard_size)
    state.records_per_shard = per_shard
    task = ShardTask(recipe.key, split, {k: str(v) for k, v in files.items()}, storage.name, plan, str(out_dir),
                     manifest.generation, manifest.key_format, per_shard, skip_bad)
    window = max(2, 2 * len(client.scheduler_info().get("workers", {})))
    results: dict[int, ShardResult | None] = {}
    listed = recipe.inputs(split, files)
    inputs = InputPlan(listed) if listed is not None else None
    # The index of the first shard past the end of the split: known from the inputs, or once a task finds it.
    end: int | None = None if inputs is None else -(-inputs.total // per_shard)
    next_shard = len(state.shards)

    def submit(shard: int) -> Any:
        piece = None if inputs is None else inputs.piece(split, shard * per_shard, (shard + 1) * per_shard)
        return client.submit(run_shard, task, shard, piece, retries=TASK_RETRIES, pure=False,
                             key=f"thresher-{recipe.name}-{split}-shard-{shard:05d}-{manifest.format}")

    first = range(next_shard, next_shard + window if end is None else min(end, next_shard + window))
    futures = [submit(shard) for shard in first]
    pending = as_completed(futures, with_results=True)
    submitted = first.stop
    try:
        for future, result in pending:
            shard = int(future.key.split("-shard-")[1].split("-")[0])
            results[shard] = result
            if result is None:
                end = shard if end is None else min(end, shard)
            elif result.entry.consumed < per_shard:
                end = shard + 1 if end is None else min(end, shard + 1)
            if end is None or submitted < end:
                futures.append(submit(submitted))
                pending.add(futures[-1])
                submitted += 1
            _record_in_order(state, results, end)
    except BaseException:
        client.cancel(futures)
        raise
    end = len(state.shards) if end is None else end  # nothing was left to submit
    missing = [k for k in range(len(state.shards), end) if results.get(k) is None]
    if missing:
        raise RuntimeError(f"{split_dir}: shard tasks {missing} returned no shard inside the split")
    remove_stale_temporaries(split_dir)  # left by tasks that died and were retried elsewhere
    return state, split_dir


def _record_in_order(state: ProgressState, results: dict[int, ShardResult | None], end: int | None) -> None:
    """Note finished shards in the progress file as soon as all before them are done (for resume)."""
    while (k := len(state.shards)) in results and (end is None or k < end):
        result = results[k]
        if result is None:
            break
        state.record(k, result.entry, result.skip_notes)
