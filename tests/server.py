"""A real HTTP server on 127.0.0.1 that misbehaves on request, for end-to-end download tests.

Every end-to-end test in the project downloads through this server instead of mocking
``requests``, so what is tested is the code that will meet real hosts. It serves the files
under ``root`` (``GET``/``HEAD``, ``Range`` -> 206 with ``Content-Range``, ``ETag`` and
``If-Range``) and, per URL path, injects the failures real dataset hosts produce:

    with LoopbackServer(tmp_path / "www", name="origin") as srv:
        url = srv.put("mnist/train.gz", data)           # write a file under root, get its URL
        srv.add_fault("/mnist/train.gz", DropAfter(fraction=0.5))   # first request only
        srv.add_fault("/mnist/train.gz", Status(503, retry_after=1))  # then the next one
        ...
        assert srv.bytes_sent("/mnist/train.gz") < 1.1 * len(data)
        assert [r.status for r in srv.requests] == [200, 503, 206]

Faults are consumed in the order they were added: each request takes the first fault of its
path (or of the wildcard path ``"*"``) that still has uses left and applies to it. ``times``
is how many requests a fault affects (``None`` = every request). Transient faults default to
one request; faults that describe what a host *serves* (HTML pages, corrupt bytes, the Drive
confirm flow, redirects) default to every request.

Two instances (``name="origin"``, ``name="mirror"``) model two hosts; each keeps its own
``requests`` log, and every :class:`RequestLog` carries the ``server`` name it hit.

The same server is every loopback host the project needs: ``tls=`` an ``ssl.SSLContext`` makes
it an HTTPS host; given an absolute URL as its request target it answers as a forward proxy
(``RequestLog.target`` keeps what was asked); bodies without a fault go out with
``socket.sendfile``, so ``python tests/server.py ROOT`` (it prints its port, then serves) is
also the download benchmark's server.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "Corrupt",
    "DriveConfirm",
    "DropAfter",
    "Fault",
    "HtmlPage",
    "IgnoreRange",
    "LoopbackServer",
    "Redirect",
    "RequestLog",
    "ShortBody",
    "Stall",
    "Meet",
    "Status",
    "WrongContentRange",
    "unused_url",
]

CHUNK = 16 * 1024


# -- faults ------------------------------------------------------------------------------------


@dataclass
class Fault:
    """Base of all faults. ``times``: how many matching requests it affects (None = all)."""

    times: int | None = field(default=1, kw_only=True)

    def applies(self, has_range: bool) -> bool:
        return True

    @property
    def label(self) -> str:
        return type(self).__name__


@dataclass
class DropAfter(Fault):
    """Close the connection after ``nbytes`` body bytes (or ``fraction`` of the file's size)."""

    nbytes: int | None = None
    fraction: float | None = None

    def cut(self, size: int) -> int:
        if self.nbytes is not None:
            return self.nbytes
        return int(size * (self.fraction if self.fraction is not None else 0.5))


@dataclass
class ShortBody(Fault):
    """Announce the full Content-Length but send ``missing`` bytes fewer, then close."""

    missing: int = 1


@dataclass
class IgnoreRange(Fault):
    """Answer a Range request with 200 and the whole file (as many static hosts do)."""

    def applies(self, has_range: bool) -> bool:
        return has_range


@dataclass
class WrongContentRange(Fault):
    """Answer a Range request with 206 whose Content-Range (and body) start at ``start``, not where asked."""

    start: int = 0

    def applies(self, has_range: bool) -> bool:
        return has_range


@dataclass
class Status(Fault):
    """Answer with ``code`` (503, 429, 404, 500, ...) and an optional Retry-After header."""

    code: int = 503
    retry_after: str | float | None = None
    body: bytes = b""
    content_type: str = "text/plain"


@dataclass
class Stall(Fault):
    """Send ``after`` body bytes, then go silent for ``seconds`` (then send the rest if the client stayed)."""

    after: int = 0
    seconds: float = 1.0


@dataclass
class Meet(Stall):
    """Send ``after`` body bytes, then wait until every request sharing ``barrier`` is waiting too.

    Proves downloads run at the same time without timing them: if they run one by one, the
    barrier is never full, and after ``seconds`` it breaks and ``missed`` is set.
    """

    barrier: threading.Barrier | None = None
    missed: bool = False


HTML_PAGES = {
    "quota": (
        "<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>"
        "<p>Sorry, you can't view or download this file at this time.</p><p>Too many users have viewed "
        "or downloaded this file recently. Please try accessing the file again later.</p></body></html>"
    ),
    "virus": (
        "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
        "<p>Google Drive can't scan this file for viruses.</p><p>big.zip is too large for Google to "
        "scan for viruses. Would you still like to download this file?</p></body></html>"
    ),
    "login": (
        "\ufeff  <html><head><title>Sign in - Example Data Portal</title></head><body>"
        '<form action="/login" method="post"><input name="user"><input type="password" name="pw">'
        "</form></body></html>"
    ),
    "cloudflare": (
        "<!DOCTYPE html><html lang=en><head><title>Just a moment...</title></head><body>"
        "<div id=cf-wrapper>Checking your browser before accessing. Performance &amp; security by "
        "Cloudflare</div></body></html>"
    ),
    "generic": (
        "\n\n<!-- moved -->\n<HTML><HEAD><TITLE>Our data moved</TITLE></HEAD><BODY>See the new site."
        "</BODY></HTML>"
    ),
    # Google's own pages, in the structure they have had since 2023 (the classes and wording gdown
    # and the bug reports against torchvision and TFDS quote): the quota page and the sign-in page
    # a file that became login-only redirects to.
    "drive-quota": (
        "<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title><meta http-equiv=\"content-type\" "
        "content=\"text/html; charset=utf-8\"/><link rel=\"icon\" href=\"//ssl.gstatic.com/docs/doclist/images/"
        "drive_2022q3_32dp.png\"/></head><body><div class=\"uc-main\"><div id=\"uc-text\"><p class=\"uc-error-"
        "caption\">Sorry, you can&#39;t view or download this file at this time.</p><p class=\"uc-error-subcaption\">"
        "Too many users have viewed or downloaded this file recently. Please try accessing the file again later. "
        "If the file you are trying to access is particularly large or is shared with many people, it may take up "
        "to 24 hours to be able to view or download the file. If you still can&#39;t access a file after 24 hours, "
        "contact your domain administrator.</p></div></div><div class=\"uc-footer\"><hr class=\"uc-footer-divider"
        "\"></div></body></html>"
    ),
    "drive-signin": (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in - Google Accounts</title>"
        "</head><body><form method=\"post\" action=\"/v3/signin/identifier\" id=\"gaia_loginform\">"
        "<input type=\"hidden\" name=\"continue\" value=\"https://drive.google.com/uc?export=download\">"
        "<input type=\"email\" name=\"identifier\"><input type=\"password\" name=\"Passwd\" hidden>"
        "</form></body></html>"
    ),
}


@dataclass
class HtmlPage(Fault):
    """Serve an HTML page instead of the file: ``kind`` in quota, virus, login, cloudflare, generic."""

    kind: str = "generic"
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    times: int | None = field(default=None, kw_only=True)

    @property
    def body(self) -> bytes:
        return HTML_PAGES[self.kind].encode("utf-8")


@dataclass
class Corrupt(Fault):
    """Serve the file with the bytes at ``offsets`` flipped (xor 0xFF); the length stays right."""

    offsets: tuple[int, ...] = (0,)
    times: int | None = field(default=None, kw_only=True)

    def apply(self, data: bytes) -> bytes:
        buf = bytearray(data)
        for off in self.offsets:
            if 0 <= off < len(buf):
                buf[off] ^= 0xFF
        return bytes(buf)


@dataclass
class DriveConfirm(Fault):
    """Emulate Google Drive's ``uc?export=download&id=...`` confirm flow on this path.

    Without the right ``confirm`` value the answer is the virus-scan warning page; with it,
    the file ``file`` (relative to root). ``style`` says where the page puts the token:
    ``cookie`` (a ``download_warning_*`` cookie), ``link`` (``confirm=TOKEN`` in a link),
    ``form`` (a download form with hidden ``confirm=t`` and ``uuid=TOKEN``), ``usercontent`` (the
    same form as Drive has served it since 2023 from drive.usercontent.google.com: the page's
    structure and an absolute ``action``) or ``t`` (no token; ``confirm=t`` works).

    Unlocked, the answer is what a request for ``file``'s own path gets, with its faults (add a
    ``DropAfter`` on ``"/" + file`` to cut the download).
    """

    file: str = ""
    token: str = "Xy9_tok-3n"
    style: str = "cookie"
    times: int | None = field(default=None, kw_only=True)

    def unlocked(self, query: dict[str, list[str]], cookies: str) -> bool:
        confirm = (query.get("confirm") or [""])[-1]
        if self.style == "t":
            return confirm == "t"
        if self.style in ("form", "usercontent"):
            return confirm == "t" and (query.get("uuid") or [""])[-1] == self.token
        return confirm == self.token

    def page(self, path: str, file_id: str, base_url: str = "") -> bytes:
        if self.style == "usercontent":
            return (
                "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title><meta http-equiv="
                '"content-type" content="text/html; charset=utf-8"/></head><body><div class="uc-main"><div '
                'id="uc-text"><p class="uc-warning-caption">Google Drive can&#39;t scan this file for viruses.'
                '</p><p class="uc-warning-subcaption"><span class="uc-name-size"><a href="/open?id='
                f'{file_id}">img_align_celeba.zip</a> (1.3G)</span> is too large for Google to scan for viruses. '
                f'Would you still like to download this file?</p><form id="download-form" action="{base_url}{path}"'
                ' method="get"><input type="submit" id="uc-download-link" class="goog-inline-block jfk-button '
                f'jfk-button-action" value="Download anyway"/><input type="hidden" name="id" value="{file_id}">'
                '<input type="hidden" name="export" value="download"><input type="hidden" name="confirm" '
                f'value="t"><input type="hidden" name="uuid" value="{self.token}"></form></div></div><div '
                'class="uc-footer"><hr class="uc-footer-divider"></div></body></html>'
            ).encode()
        head = "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
        text = "<p>Google Drive can't scan this file for viruses.</p>"
        if self.style == "link":
            text += (
                f'<a id="uc-download-link" href="{path}?export=download&amp;confirm={self.token}'
                f'&amp;id={file_id}">Download anyway</a>'
            )
        elif self.style == "form":
            text += (
                f'<form id="download-form" action="{path}" method="get">'
                f'<input type="submit" value="Download anyway"/>'
                f'<input type="hidden" name="id" value="{file_id}">'
                '<input type="hidden" name="export" value="download">'
                '<input type="hidden" name="confirm" value="t">'
                f'<input type="hidden" name="uuid" value="{self.token}"></form>'
            )
        return (head + text + "</body></html>").encode()


@dataclass
class Redirect(Fault):
    """Answer with a redirect to ``location`` (absolute URL or path)."""

    location: str = "/"
    code: int = 302
    times: int | None = field(default=None, kw_only=True)


# -- the log -----------------------------------------------------------------------------------


@dataclass
class RequestLog:
    """One request as the server saw it. ``body_bytes`` counts body bytes handed to the socket."""

    server: str
    method: str
    path: str
    query: str
    range: str | None
    headers: dict[str, str]
    status: int = 0
    body_bytes: int = 0
    fault: str | None = None
    started: float = 0.0
    target: str = ""  # the request target as sent: an absolute URL when the client used us as a proxy


# -- the server --------------------------------------------------------------------------------


def unused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def do_GET(self) -> None:
        self._handle(head=False)

    # -- plumbing ------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        self.entry.body_bytes += len(data)
        self.wfile.write(data)

    def _status(self, code: int, headers: dict[str, str], body: bytes = b"", head: bool = False) -> None:
        self.entry.status = code
        self.send_response(code)
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body and not head:
            self._send(body)

    def _cut(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _handle(self, head: bool) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        self.entry = RequestLog(
            server=owner.name,
            method=self.command,
            path=path,
            query=parts.query,
            range=self.headers.get("Range"),
            headers=dict(self.headers.items()),
            started=time.monotonic(),
            target=self.path,
        )
        owner._log(self.entry)
        fault = owner._take_fault(path, has_range=self.entry.range is not None)
        self.entry.fault = fault.label if fault else None
        try:
            self._respond(owner, path, parts.query, fault, head)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def _respond(self, owner: LoopbackServer, path: str, query: str, fault: Fault | None, head: bool) -> None:
        if isinstance(fault, Status):
            headers = {"Content-Type": fault.content_type}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            self._status(fault.code, headers, fault.body, head)
            return
        if isinstance(fault, HtmlPage):
            self._status(fault.status, {"Content-Type": fault.content_type}, fault.body, head)
            return
        if isinstance(fault, Redirect):
            self._status(fault.code, {"Location": fault.location})
            return
        if isinstance(fault, DriveConfirm):
            q = parse_qs(query)
            if not fault.unlocked(q, self.headers.get("Cookie", "")):
                file_id = (q.get("id") or ["0"])[-1]
                headers = {"Content-Type": "text/html; charset=utf-8"}
                if fault.style == "cookie":
                    headers["Set-Cookie"] = f"download_warning_13058_{file_id}={fault.token}; Path=/"
                self._status(200, headers, fault.page(path, file_id, owner.url), head)
                return
            file_path = "/" + fault.file
            self._respond(owner, file_path, "", owner._take_fault(file_path, self.entry.range is not None), head)
            return
        target = owner._resolve(path)
        if target is None or not target.is_file():
            self._status(404, {"Content-Type": "text/plain"}, b"not found\n", head)
            return
        self._serve_file(target, fault, head)

    def _serve_file(self, target: Path, fault: Fault | None, head: bool) -> None:
        st = target.stat()
        size = st.st_size
        data = fault.apply(target.read_bytes()) if isinstance(fault, Corrupt) else None
        etag = self.server.owner._etag(target, st, data)
        last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "Last-Modified": last_modified,
        }
        start, end = 0, size - 1
        status = 200
        rng = _parse_range(self.headers.get("Range"), size)
        if_range = self.headers.get("If-Range")
        if rng is not None and if_range is not None and if_range not in (etag, last_modified):
            rng = None  # the file changed since the client's copy: send it whole
        if rng == "unsatisfiable":
            self._status(416, {"Content-Range": f"bytes */{size}", "Content-Type": "text/plain"}, b"", head)
            return
        if isinstance(rng, tuple) and not isinstance(fault, IgnoreRange):
            start, end = rng
            status = 206
        if isinstance(fault, WrongContentRange):
            start, end = fault.start, size - 1
            status = 206
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = max(0, end - start + 1)
        headers["Content-Length"] = str(length)
        self.entry.status = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if head:
            return
        if data is None and not isinstance(fault, (ShortBody, DropAfter, Stall)):
            with open(target, "rb") as f:  # straight from the page cache: a 1 GB body costs the server little
                self.entry.body_bytes += self.connection.sendfile(f, start, length) if length else 0
            return
        if data is None:
            with open(target, "rb") as f:
                f.seek(start)
                body = f.read(length)
        else:
            body = data[start : end + 1]
        self._send_faulty(body, size, fault)

    def _send_faulty(self, body: bytes, size: int, fault: Fault | None) -> None:
        """Send ``body`` in chunks, cutting, shortening or stalling it as ``fault`` says."""
        if isinstance(fault, ShortBody):
            self._send(body[: max(0, len(body) - fault.missing)])
            self._cut()
            return
        limit = fault.cut(size) if isinstance(fault, DropAfter) else None
        stall_at = fault.after if isinstance(fault, Stall) else None
        sent = 0
        while sent < len(body):
            if stall_at is not None and sent >= stall_at:
                self.wfile.flush()
                if isinstance(fault, Meet) and fault.barrier is not None:
                    try:
                        fault.barrier.wait(fault.seconds)
                    except threading.BrokenBarrierError:
                        fault.missed = True
                else:
                    self.server.owner._stop.wait(fault.seconds)  # type: ignore[union-attr]
                stall_at = None
            step = CHUNK
            if stall_at is not None:
                step = min(step, stall_at - sent)
            if limit is not None:
                step = min(step, limit - sent)
                if step <= 0:
                    self._cut()
                    return
            chunk = body[sent : sent + step]
            self._send(chunk)
            sent += len(chunk)
        if limit is not None and sent >= limit and limit < len(body):
            self._cut()


def _parse_range(value: str | None, size: int) -> tuple[int, int] | str | None:
    """``(start, end)`` for a single ``bytes=`` range, ``"unsatisfiable"``, or None (ignore it)."""
    if not value or not value.startswith("bytes=") or "," in value:
        return None
    first, _, last = value[len("bytes=") :].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(0, size - n), size - 1) if n > 0 and size else "unsatisfiable"
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: LoopbackServer

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hanging up (timeouts, drops we caused, refused TLS) are normal here; anything else is printed."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 (ephemeral port) serving ``root``, with injectable faults."""

    def __init__(self, root: Path, name: str = "server", *, tls: ssl.SSLContext | None = None,
                 content_etags: bool = True) -> None:
        """``content_etags``: ETags hash the bytes, so a rewritten file always gets a new one; off,
        they come from size and mtime (for files too large to hash on every request)."""
        self.root = Path(root)
        self.content_etags = content_etags
        self.root.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.requests: list[RequestLog] = []
        self._faults: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.port: int = self._httpd.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> LoopbackServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                name=f"loopback-{self.name}",
            )  # fmt: skip
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()  # wake stalled handlers
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- content and faults --------------------------------------------------------------------

    def put(self, relpath: str, data: bytes) -> str:
        """Write ``data`` to ``root/relpath`` and return its URL."""
        target = self.root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return self.url_for(relpath)

    def url_for(self, relpath: str) -> str:
        return f"{self.url}/{relpath.lstrip('/')}"

    def add_fault(self, path: str, fault: Fault) -> None:
        """Inject ``fault`` for requests to URL path ``path`` (e.g. ``"/mnist/train.gz"``, or ``"*"``)."""
        if path != "*" and not path.startswith("/"):
            path = "/" + path
        with self._lock:
            self._faults.setdefault(path, []).append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # -- what happened -------------------------------------------------------------------------

    def hits(self, path: str | None = None, method: str | None = "GET") -> list[RequestLog]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (path is None or r.path == path) and (method is None or r.method == method)
            ]

    def bytes_sent(self, path: str) -> int:
        """Body bytes sent for ``path`` over all requests."""
        return sum(r.body_bytes for r in self.hits(path, method=None))

    # -- internals -----------------------------------------------------------------------------

    def _log(self, entry: RequestLog) -> None:
        with self._lock:
            self.requests.append(entry)

    def _take_fault(self, path: str, has_range: bool) -> Fault | None:
        with self._lock:
            for key in (path, "*"):
                for fault in self._faults.get(key, []):
                    if fault.times is not None and fault.times <= 0:
                        continue
                    if not fault.applies(has_range):
                        continue
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _etag(self, target: Path, st: os.stat_result, data: bytes | None) -> str:
        if not self.content_etags:
            return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        digest = hashlib.sha1(data if data is not None else target.read_bytes())
        return f'"{digest.hexdigest()[:16]}"'

    def _resolve(self, path: str) -> Path | None:
        root = self.root.resolve()
        target = (root / path.lstrip("/")).resolve()
        if target != root and root not in target.parents:
            return None
        return target


def main(root: str) -> None:
    """Serve ``root`` until killed, after printing the port on one line (for the download benchmark)."""
    server = LoopbackServer(Path(root), name="benchmark", content_etags=False).start()
    print(server.port, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1])
