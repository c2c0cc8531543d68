"""Decompress on a background thread while the caller encodes and writes.

zlib, bz2 and lzma release the GIL while they inflate, so a thread that decompresses a few
chunks ahead runs on another core beside the conversion instead of before it: for MNIST and
CIFAR-10 the inflate is a large part of the whole conversion. Read-ahead is bounded
(``depth`` chunks), errors surface in the reader at the position they happened, and closing
the reader stops the thread.
"""

from __future__ import annotations

import contextlib
import io
import queue
import threading
from collections.abc import Callable
from typing import BinaryIO

_END = b""


class ReadAhead(io.RawIOBase):
    """The bytes of ``inner``, read ``depth`` chunks ahead on a daemon thread.

    ``position`` (called on that thread after each chunk) reports how far the underlying
    compressed file has been read; :attr:`source_position` is its value for the chunk being
    served, so ratio checks see the same numbers whatever the thread's lead.
    """

    def __init__(self, inner: BinaryIO, *, chunk: int = 1 << 20, depth: int = 8,
                 position: Callable[[], int] | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.source_position = 0
        self._queue: queue.Queue[tuple[bytes, int] | BaseException] = queue.Queue(depth)
        self._stop = threading.Event()
        self._current = memoryview(b"")
        self._failure: BaseException | None = None
        self._ended = False
        # The thread gets no reference to self, so an abandoned reader is collected and closed.
        self._thread = threading.Thread(target=_produce, args=(inner, chunk, position, self._queue, self._stop),
                                        name="thresher-readahead", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._current:
            if self._failure is not None:
                raise self._failure
            if self._ended:
                return 0
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._failure = item
                raise item
            data, self.source_position = item
            if not data:
                self._ended = True
                return 0
            self._current = memoryview(data)
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n

    def close(self) -> None:
        if self.closed:
            return
        self._stop.set()
        while self._thread.is_alive():  # let a blocked put() finish, then the thread sees the stop
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._current = memoryview(b"")
        try:
            self.inner.close()
        finally:
            super().close()


def _produce(inner: BinaryIO, chunk: int, position: Callable[[], int] | None,
             out: queue.Queue[tuple[bytes, int] | BaseException], stop: threading.Event) -> None:
    def put(item: tuple[bytes, int] | BaseException) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    try:
        while not stop.is_set():
            data = inner.read(chunk) or _END
            if not put((data, position() if position is not None else 0)) or data is _END:
                return
    except BaseException as exc:  # noqa: BLE001 - handed to the reader, raised there
        put(exc)
