"""TLS is always verified, and proxies from the environment are used: real TLS and a real proxy on loopback."""

from __future__ import annotations

import hashlib
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_matrix import scenario
from server import LoopbackServer

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


@pytest.fixture
def https_server(certificates: Path, tmp_path: Path) -> Iterator[str]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    with LoopbackServer(tmp_path / "www", name="https", tls=context) as server:
        server.put("pub/data.bin", DATA)
        yield server.url


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
    with LoopbackServer(tmp_path / "www", name="proxy") as proxy:
        proxy.put("pub/data.bin", DATA)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "")
        monkeypatch.setenv("no_proxy", "")
        url = "http://datasets.example.invalid/pub/data.bin"  # .invalid never resolves: only the proxy can answer
        out = fetch_sources("demo", [_source(url)], tmp_path / "dl", progress=False)
    assert out["data.bin"].read_bytes() == DATA
    assert [r.target for r in proxy.requests] == [url]
