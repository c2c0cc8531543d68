"""Get a recipe's source files into the download directory, verified, or fail saying exactly why.

Per file: take ``<dest>.lock``; use the file if it is already there and verifies; otherwise try
the mirror and then the recipe's URLs in order, each into ``<dest>.part``; only a copy whose
size and checksum match is renamed to its final name. Bad copies go to ``<dest>.corrupt``.
Files run in parallel on a thread pool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from thresher.atomic import check_free_space, disk_errors, fsync_file, place
from thresher.errors import (
    ChecksumError,
    DiskSpaceError,
    DownloadError,
    HtmlInsteadOfDataError,
    LockTimeout,
    ManualDownloadRequired,
    OfflineError,
    ThresherError,
)
from thresher.fetch.checksums import (
    Expected,
    RecordedChecksums,
    check_digest,
    describe_actual,
    drop_stamp,
    format_checksums,
    read_checksums_file,
    read_stamp,
    record_checksums,
    write_stamp,
)
from thresher.fetch.http import RetryPolicy, make_session
from thresher.fetch.lock import file_lock
from thresher.hashing import Actual, hash_file
from thresher.recipe import Source

__all__ = ["compute_checksums", "fetch_sources", "format_checksums"]

log = logging.getLogger("thresher.fetch")

MIRROR_ENV = "THRESHER_MIRROR"
DEFAULT_LOCK_TIMEOUT = 12 * 3600.0


@dataclass
class _Context:
    recipe_name: str
    download_dir: Path
    mirror: str | None
    offline: bool
    policy: RetryPolicy
    progress: bool
    update_checksums: bool
    lock_timeout: float | None
    overrides: dict[str, tuple[int | None, str]]
    overrides_origin: str
    recorded: RecordedChecksums
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Failure:
    url: str
    reason: str
    kind: type[DownloadError] = DownloadError
    actual: Actual | None = None


def fetch_sources(
    recipe_name: str,
    sources: Sequence[Source],
    download_dir: Path,
    *,
    mirror: str | None = None,
    offline: bool = False,
    checksums_file: Path | None = None,
    workers: int = 4,
    progress: bool | None = None,
    policy: RetryPolicy | None = None,
    update_checksums: bool = False,
    lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
) -> dict[str, Path]:
    """Make every source present and verified in ``download_dir``; return filename -> final path.

    ``mirror`` (or ``$THRESHER_MIRROR``) is a base URL, ``file://`` URL or directory holding
    ``<recipe_name>/<filename>``; it is tried before the recipe's URLs. ``offline`` restricts
    the network to the mirror. ``checksums_file`` (``filename<TAB>size<TAB>sha256``) beats both
    the values recorded in ``<download_dir>/checksums.tsv`` and the recipe's published ones.
    ``update_checksums`` accepts a downloaded file that differs from the recorded or published
    values and records its new ones.
    """
    download_dir = Path(download_dir)
    with disk_errors(download_dir):
        download_dir.mkdir(parents=True, exist_ok=True)
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV) or None
    overrides = read_checksums_file(Path(checksums_file)) if checksums_file else {}
    ctx = _Context(
        recipe_name=recipe_name,
        download_dir=download_dir,
        mirror=mirror.rstrip("/") if mirror else None,
        offline=offline,
        policy=policy or RetryPolicy(),
        progress=sys.stderr.isatty() if progress is None else progress,
        update_checksums=update_checksums,
        lock_timeout=lock_timeout,
        overrides=overrides,
        overrides_origin=f"--checksums {checksums_file}",
        recorded=RecordedChecksums(download_dir),
    )
    _check_names(sources)
    recorded = ctx.recorded.load()
    plans = [(source, _expected(source, ctx, recorded)) for source in sources]
    _fail_fast(plans, ctx)
    _check_space(plans, ctx)

    results: dict[str, Path] = {}
    errors: list[BaseException] = []
    if workers <= 1 or len(plans) <= 1:
        for source, expected in plans:
            try:
                results[source.filename] = _fetch_one(source, expected, ctx)
            except ThresherError as e:
                errors.append(e)
    else:
        pool = ThreadPoolExecutor(max_workers=min(workers, len(plans)), thread_name_prefix="thresher-fetch")
        try:
            futures = {pool.submit(_fetch_one, s, e, ctx): s.filename for s, e in plans}
            for future, filename in futures.items():
                try:
                    results[filename] = future.result()
                except ThresherError as e:
                    errors.append(e)
        except BaseException:
            ctx.cancel.set()  # Ctrl-C: stop the other downloads at their next chunk; .part files stay
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    if errors:
        raise _combine(errors)
    return {s.filename: results[s.filename] for s, _ in plans}


def compute_checksums(download_dir: Path, filenames: Iterable[str]) -> list[tuple[str, int, str]]:
    """``(filename, size, sha256)`` of files present in ``download_dir``, for ``thresher checksums NAME``."""
    rows = []
    for filename in filenames:
        path = Path(download_dir) / filename
        if not path.is_file():
            raise ThresherError(f"{path}: not there, so its checksum cannot be computed; download it first")
        actual = hash_file(path)
        rows.append((filename, actual.size, actual.sha256))
    return rows


def accept_current_files(download_dir: Path, filenames: Iterable[str]) -> list[tuple[str, int, str]]:
    """Trust the files as they are now: for ``thresher checksums NAME --update``.

    A copy that failed verification waits as ``<file>.corrupt``; accepting a changed upstream
    file means putting that copy back under its name and recording its checksum.
    """
    for filename in filenames:
        path = Path(download_dir) / filename
        rejected = path.with_name(path.name + ".corrupt")
        if not path.is_file() and rejected.is_file():
            log.warning("accepting %s as %s", rejected, path)
            os.replace(rejected, path)
    rows = compute_checksums(download_dir, filenames)
    record_checksums(download_dir, rows)
    return rows


# -- planning ----------------------------------------------------------------------------------


def _check_names(sources: Sequence[Source]) -> None:
    seen = set()
    for source in sources:
        p = PurePosixPath(source.filename)
        if not source.filename or p.is_absolute() or ".." in p.parts or "\\" in source.filename:
            raise ThresherError(
                f"source filename {source.filename!r} must be a relative path inside the download dir"
            )
        if source.filename in seen:
            raise ThresherError(f"source filename {source.filename!r} appears twice")
        seen.add(source.filename)


def _expected(source: Source, ctx: _Context, recorded: dict[str, tuple[int | None, str]]) -> Expected:
    where = f"source {source.filename}"
    sha256 = check_digest(source.sha256, "sha256", where)
    md5 = check_digest(source.md5, "md5", where)
    if source.filename in ctx.overrides:
        size, digest = ctx.overrides[source.filename]
        return Expected(size=size, sha256=digest, origin=ctx.overrides_origin, override=True)
    if source.filename in recorded:
        size, digest = recorded[source.filename]
        if sha256 and digest != sha256:
            log.warning(
                "%s: using sha256 %s recorded in %s instead of the published %s (%s)",
                source.filename, digest, ctx.recorded.path, sha256, source.checksum_source,
            )  # fmt: skip
        return Expected(size=size, sha256=digest, origin=f"recorded in {ctx.recorded.path}", recorded=True)
    if sha256 or md5:
        return Expected(
            size=source.size, sha256=sha256, md5=md5, origin=f"published: {source.checksum_source}"
        )
    return Expected(size=source.size, origin="no checksum published")


def _mirror_location(ctx: _Context, filename: str) -> str | None:
    if not ctx.mirror:
        return None
    if "://" in ctx.mirror and not ctx.mirror.startswith("file://"):
        return f"{ctx.mirror}/{quote(ctx.recipe_name)}/{quote(filename)}"
    return f"{ctx.mirror}/{ctx.recipe_name}/{filename}"


def _local_path(location: str) -> Path | None:
    """The file path of a ``file://`` URL or plain path mirror location; None for network URLs."""
    if location.startswith("file://"):
        return Path(unquote(urlsplit(location).path))
    if "://" in location:
        return None
    return Path(location)


def _fail_fast(plans: list[tuple[Source, Expected]], ctx: _Context) -> None:
    """Errors that need no network, raised before any download starts."""
    for source, _ in plans:
        dest = ctx.download_dir / source.filename
        if dest.exists() or ctx.mirror:
            continue
        if source.manual:
            raise _manual_error(source, dest)
        if ctx.offline:
            raise OfflineError(
                f"{source.filename} is not in {ctx.download_dir} and --offline forbids fetching it from "
                f"{', '.join(source.urls) or 'its URLs'}; place the file at {dest}, or give a mirror "
                f"(--mirror or ${MIRROR_ENV})"
            )


def _manual_error(source: Source, dest: Path) -> ManualDownloadRequired:
    err = ManualDownloadRequired(f"{source.filename} must be downloaded by hand and placed at {dest}")
    err.filename, err.path = source.filename, dest  # type: ignore[attr-defined]
    return err


def _check_space(plans: list[tuple[Source, Expected]], ctx: _Context) -> None:
    needed, count = 0, 0
    for source, expected in plans:
        dest = ctx.download_dir / source.filename
        if dest.exists() or expected.size is None:
            continue
        part = dest.with_name(dest.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        needed += max(0, expected.size - have)
        count += 1
    check_free_space(ctx.download_dir, needed, f"downloading {count} file(s) of {ctx.recipe_name}",
                     "free some space or choose another --download-dir")


# -- one file ----------------------------------------------------------------------------------


def _fetch_one(source: Source, expected: Expected, ctx: _Context) -> Path:
    dest = ctx.download_dir / source.filename
    with disk_errors(dest.parent):
        dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.with_name(dest.name + ".lock"), timeout=ctx.lock_timeout):
        if not expected.has_hash and not expected.override:
            # Another process may have recorded this file while we waited for the lock.
            expected = _expected(source, ctx, ctx.recorded.load())
        note = ""
        if dest.exists():
            actual = _verify_present(dest, expected)
            problems = expected.problems(actual)
            if not problems:
                if not expected.has_hash:
                    _record_first(source.filename, actual, ctx, "found in the download dir")
                return dest
            corrupt = _move_aside(dest, dest)
            note = f"{dest} was present but wrong ({'; '.join(problems)}); moved to {corrupt}"
            log.warning("%s", note)
            if source.manual and not ctx.mirror:
                raise ChecksumError(
                    f"{note}. Expected {expected.describe()}. Download {source.filename} again by hand "
                    f"and place it at {dest}"
                )
        if source.manual and not ctx.mirror:
            raise _manual_error(source, dest)
        return _download(source, expected, dest, ctx, note)


def _verify_present(dest: Path, expected: Expected) -> Actual:
    stamp = read_stamp(dest)
    if stamp is not None and (stamp.md5 is not None or not expected.needs_md5):
        return stamp
    if expected.size is not None and dest.stat().st_size != expected.size:
        return Actual(size=dest.stat().st_size, sha256="")  # no need to hash: the size already differs
    actual = hash_file(dest, md5=expected.needs_md5)
    if not expected.problems(actual):
        write_stamp(dest, actual)
    return actual


def _move_aside(path: Path, dest: Path) -> Path:
    """Keep a bad copy (of ``dest``) as ``<dest>.corrupt`` for inspection, replacing an older one."""
    corrupt = dest.with_name(dest.name + ".corrupt")
    drop_stamp(dest)
    os.replace(path, corrupt)
    return corrupt


def _download(source: Source, expected: Expected, dest: Path, ctx: _Context, note: str) -> Path:
    # The transfer code (requests, urllib3, tqdm) is imported by the first file that needs it.
    from thresher.fetch.transfer import PartState, UrlFailed, copy_local, download_to_part

    part = dest.with_name(dest.name + ".part")
    locations: list[str] = []
    mirror = _mirror_location(ctx, source.filename)
    if mirror:
        locations.append(mirror)
    skipped: tuple[str, ...] = ()
    if source.manual:
        skipped = ()
    elif ctx.offline:
        skipped = source.urls
    else:
        locations.extend(u for u in source.urls if u != mirror)
    failures: list[_Failure] = []
    session = make_session()
    try:
        for location in locations:
            local = _local_path(location)
            try:
                if local is not None:
                    if not local.is_file():
                        raise UrlFailed(location, "not in the mirror directory")
                    actual = copy_local(
                        local, part, filename=source.filename, expected=expected, progress=ctx.progress
                    )
                else:
                    actual = download_to_part(
                        session, location, part, filename=source.filename, expected=expected,
                        policy=ctx.policy, progress=ctx.progress, cancel=ctx.cancel,
                    )  # fmt: skip
            except (UrlFailed, HtmlInsteadOfDataError) as e:
                kind = HtmlInsteadOfDataError if isinstance(e, HtmlInsteadOfDataError) else DownloadError
                failures.append(_Failure(location, getattr(e, "reason", str(e)), kind))
                log.warning("%s: %s: %s", source.filename, location, failures[-1].reason)
                continue
            problems = expected.problems(actual)
            if problems and ctx.update_checksums and not expected.override:
                log.warning(
                    "%s: accepting a changed file from %s (%s); recording size=%d sha256=%s in %s",
                    source.filename, location, "; ".join(problems), actual.size, actual.sha256, ctx.recorded.path,
                )  # fmt: skip
                ctx.recorded.record({source.filename: (actual.size, actual.sha256)})
                problems = []
                expected = Expected(size=actual.size, sha256=actual.sha256, recorded=True)
            if not problems:
                _place(part, dest)
                write_stamp(dest, actual)
                if not expected.has_hash:
                    _record_first(source.filename, actual, ctx, f"downloaded from {location}")
                return dest
            corrupt = _move_aside(part, dest)
            PartState.remove(part)
            failures.append(
                _Failure(
                    location,
                    f"wrong file: got {describe_actual(actual)}; bad copy moved to {corrupt}",
                    ChecksumError,
                    actual,
                )
            )
            log.warning("%s: %s: %s", source.filename, location, failures[-1].reason)
    finally:
        session.close()
    if source.manual:
        err = _manual_error(source, dest)
        tried = "; ".join(f"{f.url}: {f.reason}" for f in failures)
        err.args = (f"{err.args[0]} (the mirror did not have it: {tried})",)
        raise err
    raise _all_failed(source, expected, dest, ctx, failures, skipped, note)


def _place(part: Path, dest: Path) -> None:
    """fsync the finished ``.part``, rename it to ``dest`` atomically, fsync the directory."""
    from thresher.fetch.transfer import PartState

    with disk_errors(dest):
        fsync_file(part)
        place(part, dest)
        PartState.remove(part)


def _record_first(filename: str, actual: Actual, ctx: _Context, how: str) -> None:
    """Trust-on-first-use: store the values of a file nobody published a checksum for, and say so loudly."""
    ctx.recorded.record({filename: (actual.size, actual.sha256)})
    log.warning(
        "%s: no checksum is published for this file; %s, recorded size=%d sha256=%s in %s and will "
        "trust these values from now on (later downloads must match them)",
        filename, how, actual.size, actual.sha256, ctx.recorded.path,
    )  # fmt: skip


def _all_failed(
    source: Source,
    expected: Expected,
    dest: Path,
    ctx: _Context,
    failures: list[_Failure],
    skipped: tuple[str, ...],
    note: str,
) -> DownloadError:
    lines = [f"could not download {source.filename} to {dest}"]
    if note:
        lines.append(f"  ({note})")
    if failures:
        lines.append(f"tried {len(failures)} URL(s):")
        lines += [f"  {i}. {f.url}: {f.reason}" for i, f in enumerate(failures, 1)]
    if skipped:
        lines.append("not tried because of --offline: " + ", ".join(skipped))
    elif ctx.offline and not failures:
        lines.append("--offline and no mirror: nothing could be tried")
    kinds = {f.kind for f in failures}
    if ChecksumError in kinds:
        lines.append(f"expected {expected.describe()}")
        if expected.override:
            lines.append(
                f"The expected values come from {ctx.overrides_origin}; correct that file if it is wrong."
            )
        else:
            bad = next(f for f in failures if f.actual is not None)
            assert bad.actual is not None
            line = format_checksums([(source.filename, bad.actual.size, bad.actual.sha256)]).splitlines()[-1]
            corrupt = dest.with_name(dest.name + ".corrupt")
            lines.append(
                "Upstream changed the file? If the publisher replaced it on purpose (check their site), "
                f"accept it with `thresher checksums {ctx.recipe_name} --update` (it puts {corrupt} back "
                f"as {dest} and records its values), or rerun with `--checksums FILE` where FILE holds "
                f"the line {line!r}. "
                "Otherwise a host served a damaged copy: try again later, or use a mirror."
            )
    # The most telling cause wins: bytes that arrived wrong say more than the URLs not tried.
    if ChecksumError in kinds:
        cls: type[DownloadError] = ChecksumError
    elif HtmlInsteadOfDataError in kinds:
        cls = HtmlInsteadOfDataError
    elif ctx.offline:
        cls = OfflineError
    else:
        cls = DownloadError
    err = cls("\n".join(lines))
    err.filename, err.path = source.filename, dest  # type: ignore[attr-defined]
    err.attempts = [(f.url, f.reason) for f in failures]  # type: ignore[attr-defined]
    return err


def _combine(errors: list[BaseException]) -> BaseException:
    """One error for several failed files; disk and lock problems first (they explain the rest)."""
    if len(errors) == 1:
        return errors[0]
    for cls in (DiskSpaceError, LockTimeout, ManualDownloadRequired):
        for e in errors:
            if isinstance(e, cls):
                return e
    types = {type(e) for e in errors}
    cls = types.pop() if len(types) == 1 else DownloadError
    combined = cls(f"{len(errors)} files failed:\n" + "\n\n".join(str(e) for e in errors))
    with contextlib.suppress(AttributeError):
        combined.errors = errors  # type: ignore[attr-defined]
    return combined
