"""``thresher relocate``: rewrite the files that name shards by absolute path after an output moved.

Shards are found relative to the manifest, so a moved output still reads and verifies; only
lists made for other tools (HDF5's ``files.txt`` for Caffe) hold the old place until rewritten.
"""

from __future__ import annotations

from pathlib import Path

from thresher.errors import ThresherError
from thresher.formats import get_format
from thresher.verify import locate_manifest


def relocate(path: str | Path) -> list[Path]:
    """Rewrite every split's list files for the directory's current place; return the files written."""
    manifest, splits = locate_manifest(Path(path))
    assert manifest.directory is not None
    storage = get_format(manifest.format)
    written: list[Path] = []
    for split in splits:
        shard_paths = [manifest.directory / s.path for s in manifest.splits[split].shards]
        missing = [p for p in shard_paths if not p.exists()]
        if missing:
            raise ThresherError(f"{missing[0]}: missing, so {split} is not all here; "
                                f"run thresher verify {manifest.directory}")
        written += storage.write_split_files(manifest.directory / split, shard_paths)
    return written
