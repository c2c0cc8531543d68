"""Getting a recipe's source files, and telling a person how when a machine cannot."""

from __future__ import annotations

from pathlib import Path

from thresher.atomic import human_bytes
from thresher.errors import DownloadError, ManualDownloadRequired
from thresher.fetch.checksums import read_checksums_file
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
    """Verified local paths of every source file; manual steps and dead hosts end in instructions.

    A recipe without sources (your own folder, read where it is) gets no download directory.
    """
    if not recipe.sources:
        return {}
    try:
        return fetch_sources(
            recipe.name, recipe.sources_to_get(Path(download_dir)), download_dir, mirror=mirror, offline=offline,
            checksums_file=checksums, progress=progress, update_checksums=update_checksums,
        )
    except ManualDownloadRequired as exc:
        exc.args = (manual_instructions(recipe, download_dir, checksums=checksums), *exc.args[1:])
        raise
    except DownloadError as exc:
        # Same exception object, so callers keep its attributes (filename, attempts, ...).
        screen = manual_instructions(recipe, download_dir, host_down=True, checksums=checksums)
        exc.args = (f"{exc}\n\n{screen}", *exc.args[1:])
        raise


def manual_instructions(recipe: Recipe, download_dir: Path, *, host_down: bool = False,
                        checksums: Path | None = None) -> str:
    """One screen: what to fetch, from where, names, sizes, checksums, and the exact directory.

    With a ``--checksums`` file its values are shown, since they, not the recipe's, are enforced.
    """
    overrides = read_checksums_file(checksums) if checksums else {}
    lines = []
    if host_down:
        lines.append(f"If the hosts stay unreachable, fetch the files of {recipe.name} yourself:")
    else:
        lines.append(f"{recipe.title or recipe.name} must be downloaded by hand.")
    if recipe.manual_instructions:
        lines.append(recipe.manual_instructions.strip())
    lines.append(f"Put these files in {Path(download_dir).absolute()}/ :")
    for source in recipe.sources:
        size, sha256, md5 = source.size, source.sha256, source.md5
        if source.filename in overrides:
            (size, sha256), md5 = overrides[source.filename], None
        checks = []
        if size:
            checks.append(f"{size:,} bytes ({human_bytes(size)})")
        if sha256:
            checks.append(f"sha256 {sha256}")
        elif md5:
            checks.append(f"md5 {md5}")
        else:
            checks.append("no checksum published: the first one you place is recorded")
        lines.append(f"  {source.filename}  " + ", ".join(checks))
        lines.append(f"      from {source.urls[0]}" if source.urls else "")
        lines.append(f"  or in its place {source.alternative} (see above)" if source.alternative else "")
    lines.append(f"then run again: thresher prepare {recipe.key} (placed files are verified, not re-downloaded).")
    return "\n".join(line for line in lines if line)
