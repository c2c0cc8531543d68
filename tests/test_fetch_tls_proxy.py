"""TLS is always verified, and proxies from the environment are used: real TLS and a real proxy on loopback."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from reliability_matrix import scenario

from thresher.errors import DownloadError
from thresher.fetch import fetch_sources
from thresher.recipe import Source

DATA = bytes(range(256)) * 4096


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=thresher test CA", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "san.cnf", cwd=d)
    return d


class _Files(http.server.BaseHTTPRequestHandler):
    """Serves DATA at /pub/data.bin; as a proxy it also accepts absolute URIs."""

    seen: list[str] = []

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        type(self).seen.append(self.path)
        path = urlsplit(self.path).path
        if path != "/pub/data.bin":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(DATA)))
        self.end_headers()
        self.wfile.write(DATA)


def _serve(server: http.server.HTTPServer) -> Iterator[http.server.HTTPServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def https_server(certificates: Path) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    for running in _serve(server):
        yield f"https://127.0.0.1:{running.server_address[1]}"


def _source(url: str) -> Source:
    return Source("data.bin", (url,), size=len(DATA), sha256=hashlib.sha256(DATA).hexdigest())


@scenario("trust", "a server whose TLS certificate is not trusted",
          "refused (certificates are always verified); trusted once its CA is configured",
          "a real HTTPS server on 127.0.0.1 with a throwaway CA: the download fails naming the certificate "
          "problem and leaves nothing; with REQUESTS_CA_BUNDLE pointing at the CA it succeeds")
def test_tls_is_verified(https_server: str, certificates: Path, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    url = f"{https_server}/pub/data.bin"
    with pytest.raises(DownloadError, match=r"TLS certificate not trusted .*REQUESTS_CA_BUNDLE") as info:
        fetch_sources("demo", [_source(url)], tmp_path / "dl", progress=False)
    assert "gave up after" not in str(info.value)  # refused at once, not retried with backoff
    assert not (tmp_path / "dl" / "data.bin").exists()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates / "ca.pem"))
    out = fetch_sources("demo", [_source(url)], tmp_path / "dl2", progress=False)
    assert out["data.bin"].read_bytes() == DATA


@scenario("trust", "a network where downloads must go through a proxy (HTTP_PROXY in the environment)",
          "the proxy from the environment is used",
          "a real forward proxy on 127.0.0.1 receives the absolute URL of a host that does not resolve "
          "and serves the file")
def test_proxy_from_environment_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _Files.seen = []
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    for running in _serve(proxy):
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{running.server_address[1]}")
        monkeypatch.setenv("NO_PROXY", "")
        monkeypatch.setenv("no_proxy", "")
        url = "http://datasets.example.invalid/pub/data.bin"  # .invalid never resolves: only the proxy can answer
        out = fetch_sources("demo", [_source(url)], tmp_path / "dl", progress=False)
    assert out["data.bin"].read_bytes() == DATA
    assert _Files.seen == [url]
