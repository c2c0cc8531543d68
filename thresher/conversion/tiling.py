"""How a split's shards tile its source indexes, checked wherever shard entries are trusted.

Shard ``k`` of a split planned at ``R`` records per shard is named ``shard_name(k)``, starts at
source index ``k*R`` and consumed ``R`` records from the recipe (the last one: 1 to ``R``); it
stores those records less the skipped ones, and its last stored key lies in its range. Progress
files, manifests, ``thresher verify`` and the reader all hold shard entries to these rules, so
a list with a gap, an overlap or a shard out of place is refused instead of read as data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from thresher.manifest import ShardEntry, SplitEntry


def shard_problem(entry: ShardEntry, index: int, *, directory: str, per_shard: int, key_format: str,
                  shard_name: Callable[[int], str], last: bool) -> str | None:
    """What is wrong with ``entry`` as shard ``index`` of a split, or None.

    ``directory`` is the split's directory relative to the format directory; ``last`` says the
    shard may be the split's short final one.
    """
    start = index * per_shard
    if entry.path != f"{directory}/{shard_name(index)}":
        return f"shard {index} is recorded as {entry.path!r}, expected {directory}/{shard_name(index)}"
    if entry.first_key != key_format % start:
        return f"{entry.path}: first key {entry.first_key!r}, expected {key_format % start!r}"
    if not (0 < entry.consumed <= per_shard) or (not last and entry.consumed != per_shard):
        return f"{entry.path}: covers {entry.consumed} source records, expected {per_shard}"
    if entry.skipped < 0 or entry.records != entry.consumed - entry.skipped:
        return (f"{entry.path}: {entry.records} records stored and {entry.skipped} skipped "
                f"do not add up to the {entry.consumed} it covers")
    if entry.records == 0:
        return None if entry.last_key == "" else f"{entry.path}: no records but a last key {entry.last_key!r}"
    try:
        last_index = int(entry.last_key)
    except ValueError:
        return f"{entry.path}: last key {entry.last_key!r} is not a record index"
    if not start + entry.records - 1 <= last_index < start + entry.consumed:
        return f"{entry.path}: last key {entry.last_key!r} lies outside its records {start}..{start + entry.consumed - 1}"
    return None


def valid_prefix(entries: Sequence[ShardEntry], *, directory: str, per_shard: int, key_format: str,
                 shard_name: Callable[[int], str]) -> int:
    """How many leading entries form a contiguous run of shards (what a resume may trust)."""
    for index, entry in enumerate(entries):
        problem = shard_problem(entry, index, directory=directory, per_shard=per_shard, key_format=key_format,
                                shard_name=shard_name, last=index == len(entries) - 1)
        if problem is not None:
            return index
    return len(entries)


def split_problems(entry: SplitEntry, *, directory: str, key_format: str,
                   shard_name: Callable[[int], str]) -> list[str]:
    """Every way a finished split's shard list fails to tile its records without gap or overlap."""
    if entry.records_per_shard <= 0:
        return [f"{directory}: the manifest gives no records per shard"]
    problems = [
        problem for index, shard in enumerate(entry.shards)
        if (problem := shard_problem(shard, index, directory=directory, per_shard=entry.records_per_shard,
                                     key_format=key_format, shard_name=shard_name,
                                     last=index == len(entry.shards) - 1)) is not None
    ]
    if sum(s.records for s in entry.shards) != entry.records:
        problems.append(f"{directory}: shards hold {sum(s.records for s in entry.shards)} records, "
                        f"the split says {entry.records}")
    if sum(s.skipped for s in entry.shards) != entry.skipped:
        problems.append(f"{directory}: shards skipped {sum(s.skipped for s in entry.shards)} records, "
                        f"the split says {entry.skipped}")
    return problems
