"""Generations of a prepared output: what readers see, and the one atomic switch between them.

A format directory holds ``manifest.json``, one ``gen-<hash>/`` directory per set of options
that decide the output's bytes, and a link ``<split> -> gen-<hash>/<split>`` per split, the
stable path that Caffe, DALI and ``thresher.open`` are given. The manifest names its
generation and every shard path in it; replacing the manifest is the switch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from thresher.atomic import fsync_dir, remove, temporary_name, write_bytes_atomic
from thresher.hashing import hash_file
from thresher.manifest import GENERATION_PREFIX, FileEntry, Manifest, SplitEntry

# Size and modification time of every shard file when its output was switched to. Kept out of
# the manifest, whose bytes depend only on the records; lets a rerun see a file changed since.
STAMPS_NAME = ".stamps.json"


class Stamps:
    """What each shard file looked like when written, to tell which ones need hashing again."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / STAMPS_NAME
        try:
            self.seen: dict[str, list[int]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.seen = {}

    def unchanged(self, path: Path, f: FileEntry) -> bool:
        """The file is as written if it is as large as recorded and untouched since; else it is hashed."""
        try:
            stat = path.stat()
        except OSError:
            return False
        if stat.st_size != f.bytes:
            return False
        if self.seen.get(f.path) == [stat.st_size, stat.st_mtime_ns]:
            return True
        return hash_file(path).sha256 == f.sha256

    @staticmethod
    def write(manifest: Manifest, out_dir: Path) -> None:
        seen = {}
        for entry in manifest.splits.values():
            for shard in entry.shards:
                for f in shard.files:
                    stat = (out_dir / f.path).stat()
                    seen[f.path] = [stat.st_size, stat.st_mtime_ns]
        write_bytes_atomic(out_dir / STAMPS_NAME, json.dumps(seen, sort_keys=True).encode())


def intact_prefix(out_dir: Path, entry: SplitEntry, *, verify: bool, stamps: Stamps | None = None) -> int:
    """How many leading shards of a finished split are still what the manifest says.

    A file is re-hashed when it changed size or time since it was written (cheap, and it
    catches a file edited in place), and every file is with ``verify`` (which catches decay).
    """
    stamps = stamps or Stamps(out_dir)
    for index, shard in enumerate(entry.shards):
        for f in shard.files:
            path = out_dir / f.path
            intact = path.is_file() and hash_file(path).sha256 == f.sha256 if verify else stamps.unchanged(path, f)
            if not intact:
                return index
    return len(entry.shards)


def split_intact(out_dir: Path, entry: SplitEntry, *, verify: bool, stamps: Stamps | None = None) -> bool:
    return intact_prefix(out_dir, entry, verify=verify, stamps=stamps) == len(entry.shards) and all(
        (out_dir / f).is_file() for f in entry.extra_files)


def switch_to(manifest: Manifest, out_dir: Path) -> None:
    """Make ``manifest`` the output readers see, then drop what belonged to earlier generations."""
    manifest.write(out_dir)
    Stamps.write(manifest, out_dir)
    link_splits(manifest, out_dir)
    for child in out_dir.iterdir():
        if child.name.startswith(GENERATION_PREFIX) and child.name != manifest.generation:
            remove(child)


def link_splits(manifest: Manifest, out_dir: Path) -> None:
    """Point ``<format>/<split>`` at the manifest's generation for every split it holds.

    Links of splits the manifest no longer has are removed, and so is a split directory left
    by a version of thresher that wrote shards there directly.
    """
    for child in out_dir.iterdir():
        if child.is_symlink() and child.name not in manifest.splits and _points_into_generation(child):
            child.unlink()
    for split in manifest.splits:
        link = out_dir / split
        target = Path(manifest.generation) / split
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        tmp = temporary_name(link)
        remove(tmp)
        tmp.symlink_to(target, target_is_directory=True)
        if link.is_dir() and not link.is_symlink():
            remove(link)
        os.replace(tmp, link)
    fsync_dir(out_dir)


def _points_into_generation(link: Path) -> bool:
    parts = Path(os.readlink(link)).parts
    return bool(parts) and parts[0].startswith(GENERATION_PREFIX)
