"""Generations of a prepared output: what readers see, and the one atomic switch between them.

A format directory holds ``manifest.json``, one ``gen-<hash>/`` directory per set of options
that decide the output's bytes, and a link ``<split> -> gen-<hash>/<split>`` per split, the
stable path that Caffe, DALI and ``thresher.open`` are given. The manifest names its
generation and every shard path in it; replacing the manifest is the switch.
"""

from __future__ import annotations

import os
from pathlib import Path

from thresher.atomic import fsync_dir, remove, temporary_name
from thresher.manifest import GENERATION_PREFIX, Manifest, SplitEntry, sha256_file


def intact_prefix(out_dir: Path, entry: SplitEntry, *, verify: bool) -> int:
    """How many leading shards of a finished split are still what the manifest says.

    By default files are checked for presence and size, which is cheap; ``verify`` re-hashes
    them too, which catches a flipped byte.
    """
    for index, shard in enumerate(entry.shards):
        for f in shard.files:
            path = out_dir / f.path
            if not path.is_file() or path.stat().st_size != f.bytes or (verify and sha256_file(path) != f.sha256):
                return index
    return len(entry.shards)


def split_intact(out_dir: Path, entry: SplitEntry, *, verify: bool) -> bool:
    return intact_prefix(out_dir, entry, verify=verify) == len(entry.shards) and all(
        (out_dir / f).is_file() for f in entry.extra_files)


def switch_to(manifest: Manifest, out_dir: Path) -> None:
    """Make ``manifest`` the output readers see, then drop what belonged to earlier generations."""
    manifest.write(out_dir)
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
