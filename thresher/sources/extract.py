"""Extracting one zip member to disk, for files that cannot be read inside an archive (an LMDB).

The member is copied under a temporary name, synced, then renamed into place, so a killed run
never leaves a half-extracted file under the final name. A stamp written after the rename says
which archive (size and modification time) and member it came from; a later run re-uses the file
only when the stamp, the archive and the file's size still agree, so a re-downloaded archive is
extracted again and a finished extraction is never repeated.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from thresher.atomic import disk_errors, place, remove, temporary_name, write_bytes_atomic
from thresher.errors import CorruptArchiveError, MalformedDataError
from thresher.sources.archive import DEFAULT_LIMITS, Limits
from thresher.sources.ziparchive import iter_zip

STAMP_SUFFIX = ".extracted.json"


def stamp_path(target: Path) -> Path:
    return target.with_name(target.name + STAMP_SUFFIX)


def _stamp(archive: Path, member: str, size: int) -> dict[str, object]:
    status = archive.stat()
    return {"archive": archive.name, "archive_size": status.st_size, "archive_mtime_ns": status.st_mtime_ns,
            "member": member, "size": size}


def _extracted_before(archive: Path, member: str, target: Path) -> bool:
    try:
        stamp = json.loads(stamp_path(target).read_text())
        size = target.stat().st_size
    except (OSError, ValueError):
        return False
    return isinstance(stamp, dict) and stamp == _stamp(archive, member, size)


def extract_member(archive: Path, member: str, target: Path, *, limits: Limits = DEFAULT_LIMITS,
                   label: str | None = None) -> Path:
    """``target``, holding member ``member`` of zip ``archive``: extracted now, or re-used from before.

    The zip is read under ``limits`` (sizes, ratios, names), as every other archive is.
    """
    if _extracted_before(archive, member, target):
        return target
    label = label or archive.name
    target.parent.mkdir(parents=True, exist_ok=True)
    remove(stamp_path(target))
    for found in iter_zip(archive, limits=limits, label=label):
        if found.name != member:
            continue
        tmp = temporary_name(target)
        try:
            with disk_errors(target, found.size), found.open() as source, open(tmp, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
                written = out.tell()
            if written != found.size:
                raise CorruptArchiveError(label, f"member {member!r}",
                                          f"holds {written:,} bytes, the zip directory says {found.size:,}")
            place(tmp, target)
        finally:
            remove(tmp)
        write_bytes_atomic(stamp_path(target), json.dumps(_stamp(archive, member, found.size)).encode())
        return target
    raise MalformedDataError(label, f"member {member!r}", "is not in the zip")
