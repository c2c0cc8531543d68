"""Small pieces of thresher.fetch, and the loopback server's own contract."""

from __future__ import annotations

import codecs
import email.utils
import time
from pathlib import Path

import pytest
import requests
from server import DropAfter, LoopbackServer, Status

from thresher.errors import MalformedDataError
from thresher.fetch import gdrive, sniff
from thresher.fetch.checksums import Actual, Expected, format_checksums, parse_checksums
from thresher.fetch.http import RetryPolicy, make_session, parse_retry_after
from thresher.fetch.transfer import parse_content_range

# -- sniffing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"<!DOCTYPE html><html>",
        b"<!doctype HTML>\n<html>",
        b"\n\n   <html lang=en>",
        codecs.BOM_UTF8 + b"  <!DOCTYPE html>",
        b"<!-- generated --><html>",
        b"<?xml version='1.0'?><!DOCTYPE html PUBLIC>",
        b"<HEAD><TITLE>x</TITLE>",
        "<html>".encode("utf-16"),
    ],
)
def test_html_is_recognised(head: bytes) -> None:
    assert sniff.looks_like_html(head)


@pytest.mark.parametrize(
    "head",
    [
        b"\x1f\x8b\x08\x00",
        b"PK\x03\x04",
        b"\x00\x00\x08\x03",
        b"<?xml version='1.0'?><annotation>",
        b"label,x\n",
    ],
)
def test_data_is_not_html(head: bytes) -> None:
    assert not sniff.looks_like_html(head)


def test_expects_html() -> None:
    assert sniff.expects_html("index.HTML") and not sniff.expects_html("train.zip")


@pytest.mark.parametrize(
    ("page", "kind"),
    [
        (b"<title>Google Drive - Quota exceeded</title>", "drive-quota"),
        (b"Too many users have viewed or downloaded this file recently", "drive-quota"),
        (b"<p>Google Drive can't scan this file for viruses.</p>", "drive-virus-scan"),
        (b'<form id="download-form" action="x">', "drive-virus-scan"),
        (b"<title>Just a moment...</title> cloudflare", "cloudflare"),
        (b"<title>Sign in</title>", "login"),
        (b'<input type="password" name=p>', "login"),
        (b"<title>Welcome</title>", "generic"),
    ],
)
def test_page_kinds(page: bytes, kind: str) -> None:
    assert sniff.classify_page(page) == kind


# -- Google Drive ------------------------------------------------------------------------------


def test_drive_url_shapes() -> None:
    assert gdrive.is_drive_url("https://drive.google.com/uc?export=download&id=1x")
    assert gdrive.is_drive_url("https://docs.google.com/uc?id=1x")
    assert gdrive.is_drive_url("http://127.0.0.1:8000/uc?export=download&id=1x")
    assert not gdrive.is_drive_url("http://127.0.0.1:8000/uc/readme.txt")
    assert not gdrive.is_drive_url("https://example.org/data.zip?id=3")


def test_drive_token_from_cookie() -> None:
    url = gdrive.confirm_url(
        "https://drive.google.com/uc?export=download&id=F", b"<html>", {"download_warning_1_F": "ab"}
    )
    assert url is not None and "confirm=ab" in url and "id=F" in url


def test_drive_token_from_link() -> None:
    page = b'<a href="/uc?export=download&amp;confirm=Q-9_z&amp;id=F">Download anyway</a>'
    url = gdrive.confirm_url("https://drive.google.com/uc?export=download&id=F", page, {})
    assert url is not None and "confirm=Q-9_z" in url


def test_drive_token_from_form() -> None:
    page = (
        b'<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
        b'<input type="hidden" name="id" value="F"><input type="hidden" name="export" value="download">'
        b'<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-1"></form>'
    )
    url = gdrive.confirm_url("https://drive.google.com/uc?export=download&id=F", page, {})
    assert url is not None and url.startswith("https://drive.usercontent.google.com/download?")
    assert "uuid=u-1" in url and "confirm=t" in url and "id=F" in url


def test_drive_falls_back_to_confirm_t_once() -> None:
    url = gdrive.confirm_url("https://drive.google.com/uc?export=download&id=F", b"<html>warning</html>", {})
    assert url is not None and "confirm=t" in url
    assert gdrive.confirm_url(url, b"<html>warning</html>", {}) is None


# -- retry policy ------------------------------------------------------------------------------


def test_backoff_doubles_and_is_capped() -> None:
    p = RetryPolicy(backoff_base=0.5, backoff_cap=3.0, jitter=0.0)
    assert [p.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_jitter_is_small() -> None:
    p = RetryPolicy(backoff_base=1.0, jitter=0.1)
    delays = {p.delay(1) for _ in range(50)}
    assert all(1.0 <= d <= 1.1 for d in delays) and len(delays) > 1


def test_retry_after_wins_but_is_capped() -> None:
    p = RetryPolicy(retry_after_cap=60.0)
    assert p.delay(1, retry_after=7) == 7
    assert p.delay(1, retry_after=3600) == 60


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(date, now=now) <= 31  # type: ignore[operator]


def test_policy_rejects_zero_attempts() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_session_verifies_tls_and_names_itself() -> None:
    s = make_session()
    assert s.verify is True and s.trust_env is True
    assert s.headers["User-Agent"].startswith("thresher/")


# -- checksums ---------------------------------------------------------------------------------


def test_checksums_round_trip() -> None:
    rows = [("b.bin", 3, "b" * 64), ("a b.tar", 10, "a" * 64)]
    text = format_checksums(rows)
    assert text.splitlines()[1] == "a b.tar\t10\t" + "a" * 64
    assert parse_checksums(text, "x") == {"a b.tar": (10, "a" * 64), "b.bin": (3, "b" * 64)}


def test_checksums_unknown_size_and_prefix() -> None:
    assert parse_checksums("f\t-\tsha256:" + "C" * 64 + "\n", "x") == {"f": (None, "c" * 64)}


@pytest.mark.parametrize("line", ["f 3 " + "a" * 64, "f\t3\tabc", "f\tthree\t" + "a" * 64])
def test_malformed_checksum_line_names_file_and_line(line: str) -> None:
    with pytest.raises(MalformedDataError) as exc:
        parse_checksums("# header\n" + line + "\n", "sums.tsv")
    assert "sums.tsv (line 2)" in str(exc.value)


def test_expected_problems() -> None:
    e = Expected(size=3, sha256="a" * 64, origin="test")
    assert e.problems(Actual(3, "a" * 64)) == []
    assert len(e.problems(Actual(4, "b" * 64))) == 2
    assert Expected(md5="c" * 32).needs_md5


def test_content_range_parsing() -> None:
    assert parse_content_range("bytes 10-19/20") == (10, 19, 20)
    assert parse_content_range("bytes 10-19/*") == (10, 19, None)
    assert parse_content_range("bytes 10-20/20") is None
    assert parse_content_range("bytes */20") is None
    assert parse_content_range(None) is None


# -- the loopback server itself (other test suites rely on it) ----------------------------------


def test_server_range_head_and_log(server: LoopbackServer) -> None:
    url = server.put("d/x.bin", bytes(range(100)))
    r = requests.get(url, headers={"Range": "bytes=90-"}, timeout=5)
    assert r.status_code == 206 and r.content == bytes(range(90, 100))
    assert r.headers["Content-Range"] == "bytes 90-99/100"
    h = requests.head(url, timeout=5)
    assert h.status_code == 200 and h.headers["Content-Length"] == "100" and h.content == b""
    r = requests.get(url, headers={"Range": "bytes=100-"}, timeout=5)
    assert r.status_code == 416
    r = requests.get(url, headers={"Range": "bytes=10-", "If-Range": '"stale"'}, timeout=5)
    assert r.status_code == 200 and len(r.content) == 100
    assert requests.get(server.url + "/../etc/passwd", timeout=5).status_code == 404
    log = server.hits("/d/x.bin", method=None)
    assert [(e.method, e.status) for e in log] == [("GET", 206), ("HEAD", 200), ("GET", 416), ("GET", 200)]
    assert server.bytes_sent("/d/x.bin") == 110
    assert all(e.server == "origin" for e in log)


def test_server_faults_are_consumed_in_order(server: LoopbackServer) -> None:
    url = server.put("d/x.bin", b"y" * 1000)
    server.add_fault("/d/x.bin", Status(503, retry_after=2))
    server.add_fault("*", Status(500))
    server.add_fault("/d/x.bin", DropAfter(nbytes=10))
    r = requests.get(url, timeout=5)
    assert r.status_code == 503 and r.headers["Retry-After"] == "2"
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, timeout=5)
    assert requests.get(server.url + "/other", timeout=5).status_code == 500
    assert requests.get(url, timeout=5).content == b"y" * 1000


def test_two_servers_are_two_hosts(server: LoopbackServer, tmp_path: Path) -> None:
    with LoopbackServer(tmp_path / "m", name="mirror") as mirror:
        mirror.put("a", b"1")
        assert requests.get(mirror.url + "/a", timeout=5).content == b"1"
        assert server.requests == [] and mirror.requests[0].server == "mirror"
        assert mirror.url != server.url


def test_server_script_serves_a_folder_for_the_benchmark(tmp_path: Path) -> None:
    """``python tests/server.py ROOT`` (the download benchmark's server) prints its port and serves ranges."""
    import subprocess
    import sys

    data = bytes(range(256)) * 4096
    (tmp_path / "big.bin").write_bytes(data)
    script = Path(__file__).with_name("server.py")
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = f"http://127.0.0.1:{int(proc.stdout.readline())}/big.bin"
        assert requests.get(url, timeout=10).content == data
        r = requests.get(url, headers={"Range": "bytes=1000-"}, timeout=10)
        assert r.status_code == 206 and r.content == data[1000:]
        assert r.headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
