"""A static file server on 127.0.0.1 that sends bodies with sendfile(2), for the download benchmark.

``http.server.SimpleHTTPRequestHandler`` copies through Python in 64 kB writes; sending from
the page cache with ``socket.sendfile`` keeps the server from being what limits a 1 GB
transfer (the benchmark checks that with curl to /dev/null). GET and HEAD, single ``Range``
requests (so resumption works), ETag and Last-Modified. Run as
``python -m benchmarks.static_server ROOT``: it prints its port on one line, then serves.
"""

from __future__ import annotations

import email.utils
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class StaticHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root: Path = Path(".")

    def do_HEAD(self) -> None:  # noqa: N802 - the name http.server dispatches to
        self._serve(send_body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(send_body=True)

    def _serve(self, *, send_body: bool) -> None:
        path = (self.root / unquote(urlsplit(self.path).path).lstrip("/")).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            self.send_error(404)
            return
        stat = path.stat()
        size = stat.st_size
        start, end, status = 0, size - 1, 200
        wanted = RANGE.match(self.headers.get("Range", "").strip())
        if wanted and any(wanted.groups()):
            first, last = wanted.groups()
            start, end = (int(first), min(int(last or size - 1), size - 1)) if first else (max(0, size - int(last)), size - 1)
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{stat.st_mtime_ns:x}-{size:x}"')
        self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if send_body:
            with open(path, "rb") as body:
                self.connection.sendfile(body, start, end - start + 1)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base class signature
        pass


def main(root: str) -> None:
    StaticHandler.root = Path(root).resolve()
    server = ThreadingHTTPServer(("127.0.0.1", 0), StaticHandler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
