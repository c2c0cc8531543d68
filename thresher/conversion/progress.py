"""Progress of a split under conversion: the finished shards a killed run may resume after.

``<split>/.progress.json`` lists shards in order, each added only after it is complete and
synced, and only right after the one before it. Loading trusts the longest prefix that tiles
the split (see :mod:`thresher.conversion.tiling`) and whose files are all there at their recorded sizes;
everything after it is written again. So progress never describes anything but a contiguous
run of complete shards, whatever failed, in whichever thread, and wherever a run was killed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thresher.atomic import remove, write_bytes_atomic
from thresher.conversion.tiling import valid_prefix
from thresher.formats import StorageFormat
from thresher.manifest import ShardEntry

if TYPE_CHECKING:
    from thresher.recipe import Recipe

PROGRESS_NAME = ".progress.json"
MAX_SKIP_NOTES = 100


@dataclass
class ProgressState:
    """Finished shards of a split, kept only if made with the same fingerprint and plan."""

    path: Path
    fingerprint: dict[str, Any]
    records_per_shard: int | None = None
    shards: list[ShardEntry] = field(default_factory=list)
    notes: list[list[str]] = field(default_factory=list)  # skipped-record notes, one list per shard

    @classmethod
    def load(cls, split_dir: Path, out_dir: Path, storage: StorageFormat, fingerprint: dict[str, Any]
             ) -> ProgressState:
        state = cls(split_dir / PROGRESS_NAME, fingerprint)
        try:
            data = json.loads(state.path.read_text())
            if data.get("fingerprint") != fingerprint:
                return state
            per_shard = int(data["records_per_shard"]) if data.get("records_per_shard") else None
            entries = [ShardEntry.from_json(s) for s in data.get("shards", [])]
            notes = [list(n) for n in data.get("notes", [])]
        except (OSError, ValueError, TypeError, KeyError):
            return state  # missing or unreadable: start the split again
        state.records_per_shard = per_shard
        if per_shard is None:
            return state
        keep = valid_prefix(entries, directory=split_dir.relative_to(out_dir).as_posix(), per_shard=per_shard,
                            key_format=fingerprint["key_format"], shard_name=storage.shard_name)
        for entry in entries[:keep]:
            if not all((out_dir / f.path).is_file() and (out_dir / f.path).stat().st_size == f.bytes
                       for f in entry.files):
                break
            state.shards.append(entry)
        state.notes = (notes + [[] for _ in state.shards])[:len(state.shards)]
        return state

    def record(self, index: int, entry: ShardEntry, notes: list[str]) -> None:
        """Add shard ``index``, which must follow the last recorded one, and save at once."""
        if index != len(self.shards):
            raise RuntimeError(f"{self.path}: shard {index} finished out of order (next is {len(self.shards)})")
        self.shards.append(entry)
        self.notes.append(notes)
        self.save()

    def save(self) -> None:
        data = {"fingerprint": self.fingerprint, "records_per_shard": self.records_per_shard,
                "shards": [asdict(s) for s in self.shards], "notes": self.notes}
        write_bytes_atomic(self.path, json.dumps(data, indent=1).encode())

    @property
    def consumed(self) -> int:
        return sum(s.consumed for s in self.shards)

    @property
    def skip_notes(self) -> list[str]:
        return [note for notes in self.notes for note in notes][:MAX_SKIP_NOTES]


def resume_split(out_dir: Path, generation: str, split: str, storage: StorageFormat, fingerprint: dict[str, Any],
                 trusted: ProgressState | None = None) -> tuple[Path, ProgressState]:
    """Ready a split directory: drop what a killed run left half done, keep its finished shards.

    ``trusted`` replaces the progress file: the verified prefix of a finished split being repaired.
    """
    split_dir = out_dir / generation / split
    split_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(split_dir)
    state = trusted or ProgressState.load(split_dir, out_dir, storage, fingerprint)
    remove_unfinished_shards(split_dir, storage, len(state.shards))
    return split_dir, state


def remove_stale_temporaries(split_dir: Path) -> None:
    """Temporaries of a killed run (the caller holds the lock, so no live process owns them)."""
    for path in split_dir.glob(".*.tmp-*"):
        remove(path)


def remove_unfinished_shards(split_dir: Path, storage: StorageFormat, keep: int) -> None:
    """Final-named shards past the ``keep`` finished ones are not trusted: remove them."""
    for candidate in split_dir.glob("shard-*"):
        index = storage.shard_index(candidate.name)
        if index is None or index >= keep:
            remove(candidate)


def progress_bar(recipe: Recipe, split: str, progress: bool | None, initial: int) -> Any:
    """One bar per split: records done of the published count, records/s and the time left.

    Shown on a terminal unless ``progress`` says otherwise; None when not shown.
    """
    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=recipe.split(split).num_records, initial=initial, unit="rec",
                desc=f"{recipe.key}/{split}", leave=False)
