"""Move one URL's bytes into ``<dest>.part``: resume, retry, hash as they arrive, refuse HTML.

This module knows nothing about mirrors, recipes or where the file ends up; it either leaves a
complete ``.part`` and returns its size and hashes, or raises :class:`UrlFailed` saying why this
URL will not do (the caller then tries the next URL). Disk errors are not a URL's fault and
propagate as :class:`DiskSpaceError`.

Safety rules for the partial file:
- ``<dest>.part.json`` records the URL, ETag/Last-Modified and total size the bytes came from;
  a ``.part`` without it is of unknown origin and is started over;
- a resume sends ``Range: bytes=N-`` (plus ``If-Range`` when the server gave a validator); a
  200 answer restarts from zero, a 206 whose Content-Range does not start at N is refused and
  the URL is then fetched whole, and a body shorter than its Content-Length is an interruption
  (resumed from what did arrive), never a finished file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import requests
import urllib3
from tqdm import tqdm

from thresher.atomic import disk_errors, write_bytes_atomic
from thresher.errors import DownloadError, HtmlInsteadOfDataError
from thresher.fetch import gdrive, sniff
from thresher.fetch.checksums import Expected
from thresher.fetch.http import RetryPolicy, is_retryable_status, parse_retry_after
from thresher.hashing import CHUNK, Actual, Hasher
from thresher.writeback import start_writeback

log = logging.getLogger("thresher.fetch")

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
# Errors that mean "the transfer broke", as opposed to our own disk writes failing.
_NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)


class Cancelled(DownloadError):
    """The caller asked every download to stop (Ctrl-C in the main thread)."""


class UrlFailed(DownloadError):
    """This URL will not deliver the file (the reason says why); the caller tries the next one."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {reason}")


def html_error(
    url: str, filename: str, page: bytes, status: int, content_type: str | None
) -> HtmlInsteadOfDataError:
    """An ``HtmlInsteadOfDataError`` for ``url`` carrying ``.url``, ``.kind`` and ``.reason``."""
    kind = sniff.classify_page(page)
    reason = f"HTTP {status} served {sniff.describe_page(kind, page)} instead of {filename}"
    if content_type:
        reason += f" (Content-Type: {content_type})"
    err = HtmlInsteadOfDataError(f"{url}: {reason}")
    err.url, err.kind, err.reason = url, kind, reason  # type: ignore[attr-defined]
    return err


@dataclass
class PartState:
    """Where the bytes in ``<dest>.part`` came from; the ``.part.json`` sidecar."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    total: int | None = None

    @staticmethod
    def path_for(part: Path) -> Path:
        return part.with_name(part.name + ".json")

    @classmethod
    def load(cls, part: Path) -> PartState | None:
        try:
            data = json.loads(cls.path_for(part).read_text(encoding="utf-8"))
            return cls(
                url=str(data["url"]),
                etag=data.get("etag"),
                last_modified=data.get("last_modified"),
                total=None if data.get("total") is None else int(data["total"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, part: Path) -> None:
        write_bytes_atomic(self.path_for(part), json.dumps(asdict(self)).encode("utf-8"))

    @classmethod
    def remove(cls, part: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            cls.path_for(part).unlink()

    @property
    def validator(self) -> str | None:
        """What to send as If-Range: a strong ETag, else Last-Modified."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``(start, end, total)`` from ``bytes S-E/T``; None when missing or malformed."""
    m = _CONTENT_RANGE.match(value or "")
    if not m:
        return None
    start, end = int(m.group(1)), int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    if end < start or (total is not None and end >= total):
        return None
    return start, end, total


class _Progress:
    """A tqdm bar per file that can be rewound when a server forces a restart."""

    def __init__(self, filename: str, total: int | None, enabled: bool) -> None:
        self.bar = tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=filename,
            disable=not enabled, leave=False, dynamic_ncols=True,
        )  # fmt: skip

    def reset(self, done: int, total: int | None) -> None:
        self.bar.reset(total=total)
        if done:
            self.bar.update(done)

    def update(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def _truncate(part: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
    PartState.remove(part)


WRITEBACK_EVERY = 8 << 20


def _write_chunk(f: BinaryIO, part: Path, data: bytes, hasher: Hasher, bar: _Progress) -> None:
    with disk_errors(part):
        before = f.tell()
        f.write(data)
        if (before + len(data)) // WRITEBACK_EVERY != before // WRITEBACK_EVERY:
            f.flush()
            start_writeback(f.fileno())  # so the fsync before placing the file is short
    hasher.update(data)
    bar.update(len(data))


class _Attempt:
    """Outcome of one request: done, or retry after a delay, or give up on the URL."""

    DONE = "done"
    RETRY = "retry"
    NEXT_HOP = "next-hop"


@dataclass
class _UrlState:
    """Mutable state of downloading one URL across its attempts."""

    url: str
    part: Path
    filename: str
    expected: Expected
    policy: RetryPolicy
    state: PartState | None
    hasher: Hasher
    failures: int = 0
    requests: int = 0
    drive_hops: int = 0
    range_broken: bool = False
    last_reason: str = ""
    retry_after: float | None = None
    cancel: threading.Event | None = None
    # The URL as listed: a .part is filed under it, not under the confirm URL a Drive warning page
    # leads to (whose token changes every time), so the next run's validator check still applies.
    origin: str = ""

    def __post_init__(self) -> None:
        self.origin = self.origin or self.url

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(
                f"{self.filename}: download cancelled; the partial file {self.part} is kept for resume"
            )


def download_to_part(
    session: requests.Session,
    url: str,
    part: Path,
    *,
    filename: str,
    expected: Expected,
    policy: RetryPolicy,
    progress: bool = False,
    cancel: threading.Event | None = None,
) -> Actual:
    """Download ``url`` into ``part`` (resuming what is there when that is safe); return its hashes.

    Raises :class:`UrlFailed` or :class:`HtmlInsteadOfDataError` (both carry ``.url`` and
    ``.reason``) when the URL cannot deliver, :class:`DiskSpaceError` when the disk cannot take the bytes.
    """
    s = _UrlState(url, part, filename, expected, policy, PartState.load(part), Hasher(md5=expected.needs_md5))
    s.cancel = cancel
    bar = _Progress(filename, expected.size, progress)
    try:
        offset = _usable_prefix(s)
        if offset:
            log.info("%s: resuming at byte %d from %s", filename, offset, url)
            s.hasher.update_from_file(part, offset)
            bar.reset(offset, expected.size)
        while True:
            outcome = _one_request(session, s, bar)
            if outcome == _Attempt.DONE:
                return s.hasher.result()
            if outcome == _Attempt.NEXT_HOP:
                continue
            if s.failures >= policy.attempts:
                raise UrlFailed(s.url, f"gave up after {s.requests} requests; last: {s.last_reason}")
            if s.requests >= policy.attempts * policy.max_progress_factor:
                raise UrlFailed(
                    s.url, f"gave up after {s.requests} interrupted requests; last: {s.last_reason}"
                )
            delay = policy.delay(max(1, s.failures), s.retry_after)
            s.retry_after = None
            log.info("%s: %s; retrying in %.2f s", s.url, s.last_reason, delay)
            if cancel is not None:
                cancel.wait(delay)
            else:
                time.sleep(delay)
    finally:
        bar.close()


def _usable_prefix(s: _UrlState) -> int:
    """How many bytes of an existing ``.part`` may be kept for this URL (0 = start over)."""
    try:
        size = s.part.stat().st_size
    except FileNotFoundError:
        return 0
    state = s.state
    if state is None or size == 0 or (state.total is not None and size > state.total):
        keep = False
    elif state.url != s.origin:
        # Bytes from another URL are only safe to continue when a known checksum will judge the
        # result; that URL's validators mean nothing here.
        keep = bool(s.expected.has_hash and s.expected.size and state.total == s.expected.size)
        if keep:
            s.state = PartState(url=s.origin, total=state.total)
            s.state.save(s.part)
    else:
        # Same URL: without a checksum, only a validator (ETag/Last-Modified) proves the file
        # did not change since, so old and new bytes are never glued together unnoticed.
        keep = s.expected.has_hash or state.validator is not None
    if not keep:
        _truncate(s.part)
        s.state = None
        return 0
    return size


def _restart(s: _UrlState, bar: _Progress) -> None:
    _truncate(s.part)
    s.state = None
    s.hasher = Hasher(md5=s.expected.needs_md5)
    bar.reset(0, s.expected.size)


def _one_request(session: requests.Session, s: _UrlState, bar: _Progress) -> str:
    offset = s.hasher.size
    if s.state is not None and s.state.total is not None and offset == s.state.total and offset > 0:
        return _Attempt.DONE  # a previous run got every byte but stopped before verifying
    s.check_cancel()
    headers = {}
    if offset > 0 and not s.range_broken:
        headers["Range"] = f"bytes={offset}-"
        if s.state is not None and s.state.validator:
            headers["If-Range"] = s.state.validator
    s.requests += 1
    try:
        resp = session.get(
            s.url, headers=headers, stream=True, timeout=s.policy.timeout, allow_redirects=True
        )
    except requests.exceptions.SSLError as e:
        # Not transient: retrying an untrusted certificate only delays the answer.
        raise UrlFailed(s.url, f"TLS certificate not trusted ({_describe_exception(e)}); for a private CA "
                               "set REQUESTS_CA_BUNDLE to its certificate file") from None
    except requests.RequestException as e:
        s.failures += 1
        s.last_reason = _describe_exception(e)
        return _Attempt.RETRY
    with contextlib.closing(resp):
        return _handle_response(session, s, resp, offset, bar)


def _handle_response(
    session: requests.Session, s: _UrlState, resp: requests.Response, offset: int, bar: _Progress
) -> str:
    status = resp.status_code
    ctype = resp.headers.get("Content-Type")
    if status == 416 and offset > 0:
        s.failures += 1
        s.last_reason = (
            f"HTTP 416 for Range bytes={offset}- (partial file longer than the server's); restarting"
        )
        _restart(s, bar)
        return _Attempt.RETRY
    if status not in (200, 206):
        s.last_reason = f"HTTP {status} {resp.reason or ''}".strip()
        if is_retryable_status(status):
            s.failures += 1
            s.retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            return _Attempt.RETRY
        page = _read_some(resp, sniff.PAGE_BYTES) if sniff.is_html_content_type(ctype) else b""
        if page and sniff.looks_like_html(page[: sniff.SNIFF_BYTES]):
            kind = sniff.classify_page(page)
            if kind != "generic":
                s.last_reason += f" ({sniff.describe_page(kind, page)})"
        raise UrlFailed(s.url, s.last_reason)

    if status == 206:
        cr = parse_content_range(resp.headers.get("Content-Range"))
        if cr is None or cr[0] != offset:
            s.failures += 1
            s.last_reason = (
                f"asked for bytes={offset}- but got 206 with Content-Range "
                f"{resp.headers.get('Content-Range')!r}; discarded the partial file and fetching it whole"
            )
            log.warning("%s: %s", s.url, s.last_reason)
            s.range_broken = True
            _restart(s, bar)
            return _Attempt.RETRY
        start, end, total = cr
        body_length: int | None = end - start + 1
    else:
        if offset > 0:
            log.info("%s: server sent the whole file instead of bytes %d-; starting over", s.url, offset)
        offset = 0
        total = _int_header(resp, "Content-Length")
        body_length = total

    stream = body_chunks(resp)
    head = b""
    interrupted: str | None = None
    if offset == 0 and not sniff.expects_html(s.filename):
        head, interrupted = _read_head(stream, sniff.SNIFF_BYTES)
        if sniff.looks_like_html(head):
            page = head + (
                _read_some_stream(stream, sniff.PAGE_BYTES - len(head)) if interrupted is None else b""
            )
            return _on_html(session, s, resp, page)

    if offset == 0:
        if s.hasher.size:
            s.hasher = Hasher(md5=s.expected.needs_md5)
            bar.reset(0, s.expected.size or total)
        s.state = PartState(
            url=s.origin,
            etag=resp.headers.get("ETag"),
            last_modified=resp.headers.get("Last-Modified"),
            total=total,
        )
        s.state.save(s.part)
        mode = "wb"
    else:
        assert s.state is not None
        if (s.state.total is None and total is not None) or (
            s.state.validator is None and resp.headers.get("ETag")
        ):
            s.state.total = s.state.total if s.state.total is not None else total
            s.state.etag = s.state.etag or resp.headers.get("ETag")
            s.state.last_modified = s.state.last_modified or resp.headers.get("Last-Modified")
            s.state.save(s.part)
        mode = "ab"

    received = 0
    with disk_errors(s.part):
        f = open(s.part, mode)  # noqa: SIM115 - closed below, with disk errors mapped
    try:
        if head:
            _write_chunk(f, s.part, head, s.hasher, bar)
            received += len(head)
        while interrupted is None:
            try:
                chunk = next(stream)
            except StopIteration:
                break
            except _NETWORK_ERRORS as e:
                interrupted = _describe_exception(e)
                break
            if chunk:
                _write_chunk(f, s.part, chunk, s.hasher, bar)
                received += len(chunk)
                s.check_cancel()
        with disk_errors(s.part):
            f.flush()
    finally:
        with disk_errors(s.part):
            f.close()

    if interrupted is None and body_length is not None and received < body_length:
        interrupted = f"body shorter than announced: {received} of {body_length} bytes"
    if interrupted is None and total is not None and s.hasher.size != total:
        interrupted = f"have {s.hasher.size} of {total} bytes after the response ended"
    if interrupted is None:
        return _Attempt.DONE
    s.last_reason = f"transfer interrupted at byte {s.hasher.size}: {interrupted}"
    if received > 0:
        s.failures = 0  # progress: resuming is cheap, so this does not use up an attempt
    else:
        s.failures += 1
    return _Attempt.RETRY


def _on_html(session: requests.Session, s: _UrlState, resp: requests.Response, page: bytes) -> str:
    """An HTML page came instead of data: follow Drive's confirm step, else fail this URL.

    Only Drive's virus-scan warning (its page, or its ``download_warning`` cookie) is confirmed;
    a quota, sign-in or any other page is reported at once, by kind.
    """
    kind = sniff.classify_page(page)
    cookies = {**session.cookies.get_dict(), **resp.cookies.get_dict()}
    warned = kind == "drive-virus-scan" or any(name.startswith("download_warning") for name in cookies)
    if gdrive.is_drive_url(s.url) and kind != "drive-quota" and warned and s.drive_hops < gdrive.MAX_CONFIRM_HOPS:
        target = gdrive.confirm_url(s.url, page, cookies, page_url=resp.url)
        if target and target != s.url:
            log.info("%s: Google Drive warning page; confirming via %s", s.url, target)
            s.drive_hops += 1
            s.url = target
            return _Attempt.NEXT_HOP
    raise html_error(s.url, s.filename, page, resp.status_code, resp.headers.get("Content-Type"))


def body_chunks(resp: requests.Response) -> Iterator[bytes]:
    """The body as it arrives, undecoded. ``read1`` hands over whatever the socket has, so a
    read timeout after a stall loses nothing already received (a plain ``read(1 MiB)`` would)."""
    raw = resp.raw
    read1 = getattr(raw, "read1", None)  # urllib3 >= 2.3
    if read1 is None:
        yield from raw.stream(64 * 1024, decode_content=False)
        return
    while True:
        data = read1(CHUNK, decode_content=False)
        if not data:
            return
        yield data


def _read_head(stream: Iterator[bytes], n: int) -> tuple[bytes, str | None]:
    """At least ``n`` bytes from the stream (fewer at EOF), and why reading stopped early if it broke."""
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = next(stream)
        except StopIteration:
            break
        except _NETWORK_ERRORS as e:
            return bytes(buf), _describe_exception(e)
        buf += chunk
    return bytes(buf), None


def _read_some_stream(stream: Iterator[bytes], n: int) -> bytes:
    buf, _ = _read_head(stream, n)
    return buf[:n]


def _read_some(resp: requests.Response, n: int) -> bytes:
    try:
        return _read_some_stream(resp.raw.stream(CHUNK, decode_content=True), n)
    except Exception:  # an error page we cannot read is still an error page
        return b""


def _int_header(resp: requests.Response, name: str) -> int | None:
    value = resp.headers.get(name)
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _describe_exception(e: BaseException) -> str:
    text = str(e)
    for marker in ("Read timed out", "timed out", "Connection refused", "Connection reset", "IncompleteRead"):
        if marker in text:
            return f"{type(e).__name__}: {marker.lower()}"
    text = text if len(text) <= 200 else text[:200] + "..."
    return f"{type(e).__name__}: {text}"


def copy_local(src: Path, part: Path, *, filename: str, expected: Expected, progress: bool = False) -> Actual:
    """Copy a file from a mirror directory into ``part``, hashing on the way (no resume: disks don't drop)."""
    hasher = Hasher(md5=expected.needs_md5)
    bar = _Progress(filename, expected.size, progress)
    PartState.remove(part)
    try:
        with open(src, "rb") as fin:
            with disk_errors(part):
                fout = open(part, "wb")  # noqa: SIM115 - closed below, with disk errors mapped
            try:
                while block := fin.read(CHUNK):
                    _write_chunk(fout, part, block, hasher, bar)
            finally:
                with disk_errors(part):
                    fout.close()
    finally:
        bar.close()
    return hasher.result()
