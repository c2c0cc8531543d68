"""Getting a recipe's source files, and telling a person how when a machine cannot."""

from __future__ import annotations

from pathlib import Path

from thresher.atomic import human_bytes
from thresher.errors import DownloadError, ManualDownloadRequired
from thresher.fetch.downloader import fetch_sources
from thresher.recipe import Recipe


def download(
    recipe: Recipe,
    download_dir: Path,
    *,
    mirror: str | None = None,
    offline: bool = False,
    checksums: Path | None = None,
    progress: bool | None = None,
    update_checksums: bool = False,
) -> dict[str, Path]:
    """Verified local paths of every source file; manual steps and dead hosts end in instructions."""
    try:
        return fetch_sources(
            recipe.name, recipe.sources, download_dir, mirror=mirror, offline=offline,
            checksums_file=checksums, progress=progress, update_checksums=update_checksums,
        )
    except ManualDownloadRequired as exc:
        exc.args = (manual_instructions(recipe, download_dir), *exc.args[1:])
        raise
    except DownloadError as exc:
        # Same exception object, so callers keep its attributes (filename, attempts, ...).
        exc.args = (f"{exc}\n\n{manual_instructions(recipe, download_dir, host_down=True)}", *exc.args[1:])
        raise


def manual_instructions(recipe: Recipe, download_dir: Path, *, host_down: bool = False) -> str:
    """One screen: what to fetch, from where, names, sizes, checksums, and the exact directory."""
    lines = []
    if host_down:
        lines.append(f"If the hosts stay unreachable, fetch the files of {recipe.name} yourself:")
    else:
        lines.append(f"{recipe.title or recipe.name} must be downloaded by hand.")
    if recipe.manual_instructions:
        lines.append(recipe.manual_instructions.strip())
    lines.append(f"Put these files in {Path(download_dir).absolute()}/ :")
    for source in recipe.sources:
        checks = []
        if source.size:
            checks.append(f"{source.size:,} bytes ({human_bytes(source.size)})")
        if source.sha256:
            checks.append(f"sha256 {source.sha256}")
        elif source.md5:
            checks.append(f"md5 {source.md5}")
        else:
            checks.append("no checksum published: the first one you place is recorded")
        lines.append(f"  {source.filename}  " + ", ".join(checks))
        lines.append(f"      from {source.urls[0]}" if source.urls else "")
    lines.append(f"then run again: thresher prepare {recipe.name} (placed files are verified, not re-downloaded).")
    return "\n".join(line for line in lines if line)
