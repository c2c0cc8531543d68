"""End-to-end download tests: thresher.fetch against a real HTTP server on 127.0.0.1.

Nothing here mocks ``requests``; faults are injected by the loopback server, so each test
exercises the code that will meet a real flaky host.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from pathlib import Path

import pytest
from reliability_matrix import scenario
from server import (
    Corrupt,
    DriveConfirm,
    DropAfter,
    HtmlPage,
    IgnoreRange,
    LoopbackServer,
    Meet,
    Redirect,
    ShortBody,
    Stall,
    Status,
    WrongContentRange,
    unused_url,
)

from thresher.errors import (
    ChecksumError,
    DiskSpaceError,
    DownloadError,
    HtmlInsteadOfDataError,
    LockTimeout,
    ManualDownloadRequired,
    OfflineError,
)
from thresher.fetch import RetryPolicy, compute_checksums, fetch_sources, format_checksums
from thresher.fetch.lock import file_lock
from thresher.recipe import Source

SIZE = 200_000


def fast(**overrides: float) -> RetryPolicy:
    values = dict(
        attempts=3,
        backoff_base=0.01,
        backoff_cap=0.05,
        retry_after_cap=2.0,
        connect_timeout=2.0,
        read_timeout=2.0,
    )
    values.update(overrides)
    return RetryPolicy(**values)  # type: ignore[arg-type]


def blob(n: int = SIZE, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def src(
    filename: str, urls: list[str] | str, data: bytes | None = None, *, publish: bool = True, **kw
) -> Source:
    urls = (urls,) if isinstance(urls, str) else tuple(urls)
    if data is not None and publish:
        kw.setdefault("size", len(data))
        kw.setdefault("sha256", sha(data))
        kw.setdefault("checksum_source", "test")
    return Source(filename=filename, urls=urls, **kw)


def fetch(sources: list[Source] | Source, tmp_path: Path, **kw) -> dict[str, Path]:
    kw.setdefault("policy", fast())
    kw.setdefault("progress", False)
    if isinstance(sources, Source):
        sources = [sources]
    return fetch_sources("demo", sources, tmp_path / "dl", **kw)


def leftovers(directory: Path) -> list[str]:
    """Partial or sidecar files left next to the downloads."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith((".part", ".part.json")))


@pytest.fixture
def other(tmp_path: Path):
    """A second host (a mirror, or the recipe's host in mirror/offline tests)."""
    with LoopbackServer(tmp_path / "www2", name="other") as srv:
        yield srv


# -- plain download ----------------------------------------------------------------------------


def test_plain_download_verifies_and_places_file(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    out = fetch(src("a.bin", url, data), tmp_path)
    path = out["a.bin"]
    assert path == tmp_path / "dl" / "a.bin"
    assert path.read_bytes() == data
    gets = server.hits("/demo/a.bin")
    assert len(gets) == 1 and gets[0].range is None and gets[0].status == 200
    assert gets[0].headers["User-Agent"].startswith("thresher/")
    assert gets[0].headers.get("Accept-Encoding") == "identity"
    assert leftovers(path.parent) == []


def test_second_run_uses_verified_file_without_network(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    fetch(src("a.bin", url, data), tmp_path)
    fetch(src("a.bin", url, data), tmp_path)
    assert len(server.requests) == 1


def test_workers_download_files_in_parallel(server: LoopbackServer, tmp_path: Path) -> None:
    sources = []
    barrier = threading.Barrier(4)
    faults = []
    for i in range(4):
        data = blob(50_000, seed=i)
        url = server.put(f"demo/f{i}.bin", data)
        faults.append(Meet(after=1000, seconds=20, barrier=barrier))  # each waits mid-body for the other three
        server.add_fault(f"/demo/f{i}.bin", faults[-1])
        sources.append(src(f"f{i}.bin", url, data))
    out = fetch(sources, tmp_path, workers=4)
    assert sorted(out) == [f"f{i}.bin" for i in range(4)]
    assert not any(f.missed for f in faults), "the four downloads never ran at the same time"
    for i in range(4):
        assert out[f"f{i}.bin"].read_bytes() == blob(50_000, seed=i)


def test_progress_bar_runs(
    server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    fetch(src("a.bin", url, data), tmp_path, progress=True)
    assert "a.bin" in capsys.readouterr().err


# -- resume ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
@scenario('1', 'connection dropped at 10%, 50% and 99% of a file',
          'the next attempt resumes with Range; total bytes sent < 1.1x the size; sha256 right',
          'requests are [no Range, `bytes=N-`] with statuses [200, 206]; server bytes sent < 1.1x; hash matches')
def test_resume_after_connection_drop(server: LoopbackServer, tmp_path: Path, fraction: float) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    server.add_fault("/demo/a.bin", DropAfter(fraction=fraction))
    out = fetch(src("a.bin", url, data), tmp_path)
    assert sha(out["a.bin"].read_bytes()) == sha(data)
    gets = server.hits("/demo/a.bin")
    cut = int(SIZE * fraction)
    assert [g.range for g in gets] == [None, f"bytes={cut}-"]
    assert [g.status for g in gets] == [200, 206]
    assert server.bytes_sent("/demo/a.bin") < 1.1 * SIZE


def test_resume_across_runs_uses_part_file(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    server.add_fault("/demo/a.bin", DropAfter(fraction=0.7, times=1))
    server.add_fault("/demo/a.bin", Status(503, times=1))
    with pytest.raises(DownloadError):
        fetch(src("a.bin", url, data), tmp_path, policy=fast(attempts=1))
    dl = tmp_path / "dl"
    assert (dl / "a.bin.part").stat().st_size == int(SIZE * 0.7)
    assert (dl / "a.bin.part.json").exists()
    assert not (dl / "a.bin").exists()
    out = fetch(src("a.bin", url, data), tmp_path)
    assert out["a.bin"].read_bytes() == data
    assert server.hits("/demo/a.bin")[-1].range == f"bytes={int(SIZE * 0.7)}-"
    assert server.bytes_sent("/demo/a.bin") < 1.1 * SIZE
    assert leftovers(dl) == []


def test_next_url_continues_partial_file_when_checksum_is_known(
    server: LoopbackServer, other: LoopbackServer, tmp_path: Path
) -> None:
    data = blob()
    first = server.put("demo/a.bin", data)
    server.add_fault("/demo/a.bin", DropAfter(fraction=0.6))
    server.add_fault("/demo/a.bin", Status(503, times=None))
    second = other.put("demo/a.bin", data)
    out = fetch(src("a.bin", [first, second], data), tmp_path, policy=fast(attempts=2))
    assert out["a.bin"].read_bytes() == data
    (hit,) = other.hits("/demo/a.bin")
    assert hit.range == f"bytes={int(SIZE * 0.6)}-" and "If-Range" not in hit.headers
    assert server.bytes_sent("/demo/a.bin") + other.bytes_sent("/demo/a.bin") < 1.1 * SIZE


def test_changed_file_between_runs_is_not_stitched(server: LoopbackServer, tmp_path: Path) -> None:
    """No checksum published: only If-Range/ETag stops old and new bytes being glued together."""
    old, new = blob(seed=1), blob(seed=2)
    url = server.put("demo/a.bin", old)
    server.add_fault("/demo/a.bin", DropAfter(fraction=0.5))
    server.add_fault("/demo/a.bin", Status(503))
    with pytest.raises(DownloadError):
        fetch(src("a.bin", url), tmp_path, policy=fast(attempts=1))
    server.put("demo/a.bin", new)
    out = fetch(src("a.bin", url), tmp_path)
    assert out["a.bin"].read_bytes() == new
    last = server.hits("/demo/a.bin")[-1]
    assert last.headers.get("If-Range") and last.status == 200


@scenario('2', 'server ignores Range (answers 200 with the whole body)',
          'the download restarts cleanly from zero',
          'second request asked for a range, got 200, and the file (no checksum to rescue it) is exact')
def test_server_ignoring_range_restarts_from_zero(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    server.add_fault("/demo/a.bin", DropAfter(fraction=0.4))
    server.add_fault("/demo/a.bin", IgnoreRange())
    out = fetch(src("a.bin", url), tmp_path)  # no checksum: a wrong append would go unnoticed
    assert out["a.bin"].read_bytes() == data
    gets = server.hits("/demo/a.bin")
    assert [g.status for g in gets] == [200, 200]
    assert gets[1].range == f"bytes={int(SIZE * 0.4)}-"


@pytest.mark.parametrize("claimed", ["start", "beyond"])
@scenario('3', '206 with a wrong Content-Range (at zero, or past the offset asked)',
          'detected, never stitched',
          'the 206 is refused and the file fetched whole without Range; bytes exact without a checksum')
def test_wrong_content_range_is_refused(server: LoopbackServer, tmp_path: Path, claimed: str) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    cut = SIZE // 2
    server.add_fault("/demo/a.bin", DropAfter(nbytes=cut))
    server.add_fault("/demo/a.bin", WrongContentRange(start=0 if claimed == "start" else cut + 7))
    out = fetch(src("a.bin", url), tmp_path)
    assert out["a.bin"].read_bytes() == data
    gets = server.hits("/demo/a.bin")
    assert [g.status for g in gets] == [200, 206, 200]
    assert gets[2].range is None  # the server's ranges are not trusted again


def test_short_body_is_an_interruption_not_a_file(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    server.add_fault("/demo/a.bin", ShortBody(missing=1000))
    out = fetch(src("a.bin", url), tmp_path)
    assert out["a.bin"].read_bytes() == data
    assert server.hits("/demo/a.bin")[1].range == f"bytes={SIZE - 1000}-"


@scenario('3', 'body shorter than Content-Length on every attempt',
          'detected; an error naming the URL; nothing under the final name',
          'DownloadError names URL and the short body; no final file')
def test_short_body_every_time_fails_without_final_file(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    server.add_fault("/demo/a.bin", ShortBody(missing=SIZE, times=None))
    with pytest.raises(DownloadError) as exc:
        fetch(src("a.bin", url, data), tmp_path)
    assert url in str(exc.value)
    assert "shorter" in str(exc.value) or "incompleteread" in str(exc.value).lower()
    assert not (tmp_path / "dl" / "a.bin").exists()


# -- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [503, 429, 500])
def test_transient_status_is_retried(server: LoopbackServer, tmp_path: Path, code: int) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    server.add_fault("/demo/a.bin", Status(code, times=2))
    out = fetch(src("a.bin", url, data), tmp_path)
    assert out["a.bin"].read_bytes() == data
    assert [g.status for g in server.hits("/demo/a.bin")] == [code, code, 200]


@scenario('4', '429 with Retry-After, then success',
          "retried after the server's delay",
          'the retry comes at least 0.95 s after a `Retry-After: 1`')
def test_retry_after_is_honoured(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    server.add_fault("/demo/a.bin", Status(429, retry_after=1))
    fetch(src("a.bin", url, data), tmp_path, policy=fast(retry_after_cap=5.0))
    first, second = server.hits("/demo/a.bin")
    assert second.started - first.started >= 0.95


@scenario('4', 'Retry-After far beyond the cap',
          'the wait is capped',
          'the retry happens within the configured cap')
def test_retry_after_is_capped(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    server.add_fault("/demo/a.bin", Status(503, retry_after=3600))
    start = time.monotonic()
    fetch(src("a.bin", url, data), tmp_path, policy=fast(retry_after_cap=0.3))
    assert time.monotonic() - start < 3
    first, second = server.hits("/demo/a.bin")
    assert second.started - first.started >= 0.29


@scenario('4', '503 on every attempt',
          'gives up after the configured attempts with an error naming URL and status',
          'exactly N requests; the error has the URL, 503 and the count; no final file')
def test_gives_up_after_attempts_naming_url_and_status(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    server.add_fault("/demo/a.bin", Status(503, times=None))
    with pytest.raises(DownloadError) as exc:
        fetch(src("a.bin", url, data), tmp_path, policy=fast(attempts=4))
    assert len(server.hits("/demo/a.bin")) == 4
    text = str(exc.value)
    assert url in text and "503" in text and "4 requests" in text
    assert not (tmp_path / "dl" / "a.bin").exists()


@scenario('5', 'server stalls mid-body',
          'a read timeout fires, the attempt is retried with Range, the run finishes',
          'finishes in well under the stall time; second request has a Range; bytes exact')
def test_stall_hits_read_timeout_then_resumes(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    server.add_fault("/demo/a.bin", Stall(after=SIZE // 2, seconds=5))
    start = time.monotonic()
    out = fetch(src("a.bin", url, data), tmp_path, policy=fast(read_timeout=0.3))
    assert time.monotonic() - start < 3
    assert out["a.bin"].read_bytes() == data
    gets = server.hits("/demo/a.bin")
    assert len(gets) == 2 and gets[1].range is not None


# -- URL order, mirrors, failures ----------------------------------------------------------------


@scenario('6', 'primary returns 404',
          'not retried; the next mirror serves the file',
          'one request to the 404 URL, the file comes from the next')
def test_404_is_not_retried_next_url_is_used(
    server: LoopbackServer, other: LoopbackServer, tmp_path: Path
) -> None:
    data = blob()
    bad = server.url_for("demo/missing.bin")
    good = other.put("demo/a.bin", data)
    out = fetch(src("a.bin", [bad, good], data), tmp_path)
    assert out["a.bin"].read_bytes() == data
    assert len(server.hits("/demo/missing.bin")) == 1


@scenario('6', 'primary refuses connections',
          'the next mirror serves the file',
          'the file arrives from the second URL')
def test_refused_connection_then_next_url(other: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    refused = unused_url() + "/a.bin"
    good = other.put("demo/a.bin", data)
    out = fetch(src("a.bin", [refused, good], data), tmp_path, policy=fast(attempts=2))
    assert out["a.bin"].read_bytes() == data


@scenario('6', 'every URL fails (404, refused, 503)',
          'the error lists every URL tried and why',
          'each URL with `HTTP 404`, `refused`, `HTTP 503` in the message and in `.attempts`')
def test_all_urls_fail_error_lists_each_with_reason(
    server: LoopbackServer, other: LoopbackServer, tmp_path: Path
) -> None:
    data = blob()
    u404 = server.url_for("demo/gone.bin")
    refused = unused_url() + "/demo/a.bin"
    u503 = other.put("demo/a.bin", data)
    other.add_fault("/demo/a.bin", Status(503, times=None))
    with pytest.raises(DownloadError) as exc:
        fetch(src("a.bin", [u404, refused, u503], data), tmp_path, policy=fast(attempts=2))
    text = str(exc.value)
    for url in (u404, refused, u503):
        assert url in text
    assert "HTTP 404" in text and "refused" in text.lower() and "HTTP 503" in text
    assert exc.value.attempts == [(u404, exc.value.attempts[0][1]), *exc.value.attempts[1:]]  # type: ignore[attr-defined]
    assert len(exc.value.attempts) == 3  # type: ignore[attr-defined]


def test_error_status_with_login_page_says_so(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    login = HtmlPage(kind="login").body
    server.add_fault("/demo/a.bin", Status(403, body=login, content_type="text/html", times=None))
    with pytest.raises(DownloadError) as exc:
        fetch(src("a.bin", server.url_for("demo/a.bin"), data), tmp_path)
    assert "HTTP 403" in str(exc.value) and "login page" in str(exc.value)
    assert len(server.hits("/demo/a.bin")) == 1


def test_redirect_is_followed(server: LoopbackServer, other: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    target = other.put("files/a.bin", data)
    server.add_fault("/old/a.bin", Redirect(target))
    out = fetch(src("a.bin", server.url_for("old/a.bin"), data), tmp_path)
    assert out["a.bin"].read_bytes() == data


def test_mirror_is_tried_before_recipe_urls(
    server: LoopbackServer, other: LoopbackServer, tmp_path: Path
) -> None:
    data = blob()
    server.put("demo/a.bin", data)  # mirror layout: <mirror>/<recipe>/<filename>
    recipe_url = other.put("pub/a.bin", data)
    out = fetch(src("a.bin", recipe_url, data), tmp_path, mirror=server.url)
    assert out["a.bin"].read_bytes() == data
    assert len(server.hits("/demo/a.bin")) == 1
    assert other.requests == []


def test_mirror_from_environment(
    server: LoopbackServer, other: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = blob()
    server.put("mirror/demo/a.bin", data)
    recipe_url = other.put("pub/a.bin", data)
    monkeypatch.setenv("THRESHER_MIRROR", server.url + "/mirror/")
    fetch(src("a.bin", recipe_url, data), tmp_path)
    assert len(server.hits("/mirror/demo/a.bin")) == 1
    assert other.requests == []


def test_mirror_missing_falls_back_to_recipe_url(
    server: LoopbackServer, other: LoopbackServer, tmp_path: Path
) -> None:
    data = blob()
    recipe_url = other.put("pub/a.bin", data)
    out = fetch(src("a.bin", recipe_url, data), tmp_path, mirror=server.url)
    assert out["a.bin"].read_bytes() == data
    assert [r.status for r in server.requests] == [404]


def test_mirror_can_be_a_directory(other: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    (tmp_path / "nfs" / "demo").mkdir(parents=True)
    (tmp_path / "nfs" / "demo" / "a.bin").write_bytes(data)
    recipe_url = other.put("pub/a.bin", data)
    out = fetch(src("a.bin", recipe_url, data), tmp_path, mirror=str(tmp_path / "nfs"), offline=True)
    assert out["a.bin"].read_bytes() == data
    assert other.requests == []


@scenario('trust', '`--offline` with a mirror',
          'no host but the mirror is contacted',
          "the recipe's own host (a second loopback server) receives zero requests")
def test_offline_uses_only_the_mirror(server: LoopbackServer, other: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    server.put("demo/a.bin", data)
    recipe_url = other.put("pub/a.bin", data)
    out = fetch(src("a.bin", recipe_url, data), tmp_path, mirror=server.url, offline=True)
    assert out["a.bin"].read_bytes() == data
    assert other.requests == []


def test_offline_mirror_without_file_errors_and_touches_no_other_host(
    server: LoopbackServer, other: LoopbackServer, tmp_path: Path
) -> None:
    data = blob()
    recipe_url = other.put("pub/a.bin", data)
    with pytest.raises(OfflineError) as exc:
        fetch(src("a.bin", recipe_url, data), tmp_path, mirror=server.url, offline=True)
    assert other.requests == []
    assert len(server.requests) == 1
    assert recipe_url in str(exc.value) and "offline" in str(exc.value)


def test_offline_without_mirror_errors_before_any_request(other: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    recipe_url = other.put("pub/a.bin", data)
    with pytest.raises(OfflineError) as exc:
        fetch(src("a.bin", recipe_url, data), tmp_path, offline=True)
    assert other.requests == []
    assert str(tmp_path / "dl" / "a.bin") in str(exc.value)


# -- corrupt data and HTML pages ---------------------------------------------------------------


@scenario('7', 'bytes corrupted in transit on the first URL',
          'never placed; kept as `.corrupt`; the next mirror is tried',
          'the good copy from the second URL is placed; the bad one is `.corrupt`')
def test_corrupt_copy_goes_aside_and_next_url_is_tried(
    server: LoopbackServer, other: LoopbackServer, tmp_path: Path
) -> None:
    data = blob()
    bad = server.put("demo/a.bin", data)
    server.add_fault("/demo/a.bin", Corrupt(offsets=(12345,)))
    good = other.put("demo/a.bin", data)
    out = fetch(src("a.bin", [bad, good], data), tmp_path)
    assert out["a.bin"].read_bytes() == data
    corrupt = tmp_path / "dl" / "a.bin.corrupt"
    assert corrupt.exists() and corrupt.read_bytes() != data and len(corrupt.read_bytes()) == SIZE
    assert len(server.hits("/demo/a.bin")) == 1  # a bad checksum is not retried on the same URL


@scenario('7', 'corrupt bytes from every URL',
          'error shows expected and actual size and sha256 and what to do',
          'no final file; `.corrupt` holds the bad bytes; message has both hashes, the size, `--checksums` and `thresher checksums NAME --update`')
def test_corrupt_everywhere_never_lands_under_final_name(
    server: LoopbackServer, other: LoopbackServer, tmp_path: Path
) -> None:
    data = blob()
    changed = Corrupt(offsets=(0, 99))
    server.put("demo/a.bin", data)
    server.add_fault("/demo/a.bin", changed)
    other.put("demo/a.bin", data)
    other.add_fault("/demo/a.bin", Corrupt(offsets=(0, 99)))
    bad_data = changed.apply(data)
    with pytest.raises(ChecksumError) as exc:
        fetch(src("a.bin", [server.url_for("demo/a.bin"), other.url_for("demo/a.bin")], data), tmp_path)
    dl = tmp_path / "dl"
    assert not (dl / "a.bin").exists()
    assert (dl / "a.bin.corrupt").read_bytes() == bad_data
    text = str(exc.value)
    assert sha(data) in text and sha(bad_data) in text and str(SIZE) in text
    assert "--checksums" in text and "thresher checksums demo --update" in text
    assert server.url_for("demo/a.bin") in text and other.url_for("demo/a.bin") in text
    assert leftovers(dl) == []


def test_md5_only_source_is_verified(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    md5 = hashlib.md5(data).hexdigest()
    out = fetch(src("a.bin", url, data, publish=False, md5=md5, size=SIZE), tmp_path)
    assert out["a.bin"].read_bytes() == data
    with pytest.raises(ChecksumError) as exc:
        fetch(src("b.bin", url, data, publish=False, md5="0" * 32), tmp_path)
    assert md5 in str(exc.value)


@pytest.mark.parametrize(
    ("kind", "phrase"),
    [
        ("quota", "quota exceeded"),
        ("virus", "virus-scan"),
        ("login", "login page"),
        ("cloudflare", "Cloudflare"),
        ("generic", "HTML page"),
    ],
)
@scenario('8', 'an HTML page instead of the archive (Drive quota, Drive virus scan, login, Cloudflare, generic)',
          'recognised from the first bytes and reported as such, not as a checksum error',
          'HtmlInsteadOfDataError naming the kind of page, not a ChecksumError; no file or .part left')
def test_html_page_instead_of_data(server: LoopbackServer, tmp_path: Path, kind: str, phrase: str) -> None:
    data = blob()
    url = server.put("demo/a.zip", data)
    server.add_fault("/demo/a.zip", HtmlPage(kind=kind))
    with pytest.raises(HtmlInsteadOfDataError) as exc:
        fetch(src("a.zip", url, data), tmp_path)
    assert phrase in str(exc.value)
    assert not isinstance(exc.value, ChecksumError)
    dl = tmp_path / "dl"
    assert not (dl / "a.zip").exists() and not (dl / "a.zip.part").exists()


def test_html_page_with_binary_content_type_is_sniffed(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = server.put("demo/a.zip", data)
    server.add_fault("/demo/a.zip", HtmlPage(kind="quota", content_type="application/octet-stream"))
    with pytest.raises(HtmlInsteadOfDataError):
        fetch(src("a.zip", url), tmp_path)  # no checksum to catch it either
    assert not (tmp_path / "dl" / "checksums.tsv").exists()


def test_expected_html_file_is_not_rejected(server: LoopbackServer, tmp_path: Path) -> None:
    page = b"<!DOCTYPE html><html><body>a dataset's readme</body></html>"
    url = server.put("demo/readme.html", page)
    out = fetch(src("readme.html", url, page), tmp_path)
    assert out["readme.html"].read_bytes() == page


def test_html_on_first_url_mirror_on_second(
    server: LoopbackServer, other: LoopbackServer, tmp_path: Path
) -> None:
    data = blob()
    server.add_fault("/uc", HtmlPage(kind="login", status=200))
    good = other.put("demo/a.zip", data)
    out = fetch(src("a.zip", [server.url + "/uc?export=download&id=abc", good], data), tmp_path)
    assert out["a.zip"].read_bytes() == data


@pytest.mark.parametrize("style", ["cookie", "link", "form", "t"])
@scenario('8', 'Google Drive confirm-token interstitial (cookie, link, form, confirm=t)',
          'the confirm flow is followed to the file',
          'two requests, the second with `confirm=` and the id; bytes exact')
def test_google_drive_confirm_flow(server: LoopbackServer, tmp_path: Path, style: str) -> None:
    data = blob()
    server.put("drive/big.zip", data)
    server.add_fault("/uc", DriveConfirm(file="drive/big.zip", style=style))
    url = server.url + "/uc?export=download&id=1AbC"
    out = fetch(src("big.zip", url, data), tmp_path)
    assert out["big.zip"].read_bytes() == data
    gets = server.hits("/uc")
    assert len(gets) == 2
    assert "confirm=" not in gets[0].query and "confirm=" in gets[1].query and "id=1AbC" in gets[1].query


def test_google_drive_quota_page_is_reported(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    server.add_fault("/uc", HtmlPage(kind="quota"))
    with pytest.raises(HtmlInsteadOfDataError) as exc:
        fetch(src("big.zip", server.url + "/uc?export=download&id=1AbC", data), tmp_path)
    assert "quota" in str(exc.value)
    assert exc.value.attempts[0][0].endswith("id=1AbC")  # type: ignore[attr-defined]
    assert len(server.hits("/uc")) == 1


# -- files already present, recorded and overridden checksums ------------------------------------


def test_placed_by_hand_file_is_used_without_network(other: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = other.put("pub/a.bin", data)
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "a.bin").write_bytes(data)
    out = fetch(src("a.bin", url, data), tmp_path, offline=True)
    assert out["a.bin"].read_bytes() == data
    assert other.requests == []


def test_placed_file_that_is_wrong_is_moved_aside_and_redownloaded(
    server: LoopbackServer, tmp_path: Path
) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "a.bin").write_bytes(data[:-1] + b"!")
    out = fetch(src("a.bin", url, data), tmp_path)
    assert out["a.bin"].read_bytes() == data
    assert (tmp_path / "dl" / "a.bin.corrupt").read_bytes() == data[:-1] + b"!"


def test_placed_file_that_is_wrong_offline_is_an_error(other: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = other.put("pub/a.bin", data)
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "a.bin").write_bytes(b"x" * SIZE)
    with pytest.raises(OfflineError) as exc:
        fetch(src("a.bin", url, data), tmp_path, offline=True)
    assert "a.bin.corrupt" in str(exc.value)
    assert not (tmp_path / "dl" / "a.bin").exists()
    assert other.requests == []


def test_file_changed_after_verification_is_rehashed(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    out = fetch(src("a.bin", url, data), tmp_path)
    out["a.bin"].write_bytes(data[:-1] + b"?")  # same size, new content: the stamp must not hide it
    fetch(src("a.bin", url, data), tmp_path)
    assert len(server.hits("/demo/a.bin")) == 2
    assert out["a.bin"].read_bytes() == data


@scenario('trust', 'nothing published for a file',
          "first download's sha256 and size recorded, said loudly once; later runs verify against it",
          '`checksums.tsv` holds the line; one warning; a changed upstream file is refused naming both hashes')
def test_unpublished_checksum_is_recorded_then_enforced(
    server: LoopbackServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, changed = blob(seed=1), blob(seed=2)
    url = server.put("demo/a.bin", data)
    with caplog.at_level(logging.WARNING, logger="thresher.fetch"):
        fetch(src("a.bin", url), tmp_path)
    record = tmp_path / "dl" / "checksums.tsv"
    assert f"a.bin\t{SIZE}\t{sha(data)}" in record.read_text()
    warnings = [r.getMessage() for r in caplog.records if "no checksum is published" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0] and sha(data) in warnings[0]

    (tmp_path / "dl" / "a.bin").unlink()
    server.put("demo/a.bin", changed)
    with pytest.raises(ChecksumError) as exc:
        fetch(src("a.bin", url), tmp_path)
    assert "recorded in" in str(exc.value) and sha(data) in str(exc.value) and sha(changed) in str(exc.value)
    assert not (tmp_path / "dl" / "a.bin").exists()

    out = fetch(src("a.bin", url), tmp_path, update_checksums=True)
    assert out["a.bin"].read_bytes() == changed
    assert f"a.bin\t{SIZE}\t{sha(changed)}" in record.read_text()


def test_unpublished_placed_file_is_recorded(other: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "a.bin").write_bytes(data)
    fetch(src("a.bin", other.url_for("a.bin")), tmp_path)
    assert sha(data) in (tmp_path / "dl" / "checksums.tsv").read_text()
    assert other.requests == []


@scenario('trust', '`--checksums FILE` for a private mirror',
          "the file's values win over the recipe's and the recorded ones",
          'a file matching only the override is accepted; a mismatch with it is refused')
def test_checksums_file_overrides_recipe_and_record(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    stale = src("a.bin", url, data, sha256="f" * 64)  # the recipe's published value is out of date
    override = tmp_path / "sums.tsv"
    override.write_text(format_checksums([("a.bin", SIZE, sha(data))]))
    out = fetch(stale, tmp_path, checksums_file=override)
    assert out["a.bin"].read_bytes() == data

    out["a.bin"].unlink()
    override.write_text(format_checksums([("a.bin", SIZE, "e" * 64)]))
    with pytest.raises(ChecksumError) as exc:
        fetch(src("a.bin", url, data), tmp_path, checksums_file=override)
    assert f"--checksums {override}" in str(exc.value)


def test_compute_and_format_checksums(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    fetch(src("a.bin", url, data), tmp_path)
    rows = compute_checksums(tmp_path / "dl", ["a.bin"])
    assert rows == [("a.bin", SIZE, sha(data))]
    assert format_checksums(rows).splitlines()[-1] == f"a.bin\t{SIZE}\t{sha(data)}"


def test_manual_source_missing_raises(other: LoopbackServer, tmp_path: Path) -> None:
    with pytest.raises(ManualDownloadRequired) as exc:
        fetch(src("ILSVRC.tar", other.url_for("x"), manual=True), tmp_path)
    assert exc.value.filename == "ILSVRC.tar"  # type: ignore[attr-defined]
    assert exc.value.path == tmp_path / "dl" / "ILSVRC.tar"  # type: ignore[attr-defined]
    assert other.requests == []


def test_manual_source_present_is_used(tmp_path: Path) -> None:
    data = blob()
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "ILSVRC.tar").write_bytes(data)
    out = fetch(src("ILSVRC.tar", (), data, manual=True), tmp_path)
    assert out["ILSVRC.tar"].read_bytes() == data


# -- disk space and locks ----------------------------------------------------------------------


@scenario('11', 'not enough free space for the declared sizes',
          'refused before any byte is downloaded',
          'DiskSpaceError and zero requests to the server')
def test_free_space_is_checked_before_downloading(server: LoopbackServer, tmp_path: Path) -> None:
    url = server.put("demo/a.bin", b"x")
    huge = Source("a.bin", (url,), size=2**60, sha256="a" * 64)
    with pytest.raises(DiskSpaceError) as exc:
        fetch(huge, tmp_path)
    assert str(tmp_path / "dl") in str(exc.value) and f"{2**60:,} bytes" in str(exc.value)
    assert server.requests == []


def test_lock_held_elsewhere_times_out(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    (tmp_path / "dl").mkdir()
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with file_lock(tmp_path / "dl" / "a.bin.lock"):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(5)
        with pytest.raises(LockTimeout) as exc:
            fetch(src("a.bin", url, data), tmp_path, lock_timeout=0.3)
        assert "a.bin.lock" in str(exc.value)
    finally:
        release.set()
        t.join()
    assert server.requests == []


def test_two_threads_same_file_download_once(server: LoopbackServer, tmp_path: Path) -> None:
    data = blob()
    url = server.put("demo/a.bin", data)
    server.add_fault("/demo/a.bin", Stall(after=1000, seconds=0.5))
    results: list[object] = []

    def run() -> None:
        try:
            results.append(fetch(src("a.bin", url, data), tmp_path)["a.bin"])
        except Exception as e:  # pragma: no cover - reported below
            results.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [tmp_path / "dl" / "a.bin"] * 2
    assert len(server.hits("/demo/a.bin")) == 1
