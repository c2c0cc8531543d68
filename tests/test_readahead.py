"""The background decompressor: same bytes, errors where they happened, no thread left behind."""

from __future__ import annotations

import gc
import io
import threading
import time
import zlib

import pytest

from thresher.sources.readahead import ReadAhead


class _Failing(io.RawIOBase):
    """Gives ``good`` bytes in small reads, then raises ``error``."""

    def __init__(self, good: bytes, error: BaseException) -> None:
        super().__init__()
        self.data, self.error = io.BytesIO(good), error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self.data.readinto(memoryview(buffer)[:1000])
        if not n:
            raise self.error
        return n


def _readahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "thresher-readahead"]


def _wait_for_no_threads() -> None:
    deadline = time.monotonic() + 5
    while _readahead_threads() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_bytes_are_the_inner_streams_in_any_read_size() -> None:
    data = bytes(range(256)) * 1_500
    for size in (1, 7, 4096, 100_000, 1 << 20):
        with ReadAhead(io.BytesIO(data), chunk=65_536 // 3, depth=3) as stream:
            parts = []
            while chunk := stream.read(size):
                parts.append(chunk)
        assert b"".join(parts) == data


def test_error_is_raised_after_the_bytes_before_it() -> None:
    stream = ReadAhead(_Failing(b"x" * 5000, zlib.error("invalid block type")), chunk=1000)
    assert [stream.read(1000) for _ in range(5)] == [b"x" * 1000] * 5
    with pytest.raises(zlib.error, match="invalid block type"):
        stream.read(1)
    with pytest.raises(zlib.error):  # and again, not a silent end of stream
        stream.read(1)
    stream.close()


def test_source_position_follows_the_chunk_being_served() -> None:
    raw = io.BytesIO(b"abcdefghij" * 100)
    stream = ReadAhead(raw, chunk=100, depth=4, position=raw.tell)
    stream.read(100)
    assert stream.source_position == 100
    time.sleep(0.05)  # the thread has read further ahead by now
    assert stream.source_position == 100
    stream.read(150)
    assert stream.source_position == 200
    stream.close()


def test_close_mid_stream_stops_the_thread_and_closes_the_inner_stream() -> None:
    _wait_for_no_threads()
    inner = io.BytesIO(b"y" * (10 << 20))
    stream = ReadAhead(inner, chunk=4096, depth=2)
    stream.read(10)
    time.sleep(0.05)  # the queue is full and the thread waits to put
    stream.close()
    assert inner.closed
    assert not _readahead_threads()


def test_an_abandoned_reader_does_not_keep_its_thread() -> None:
    _wait_for_no_threads()
    stream = ReadAhead(io.BytesIO(b"z" * (10 << 20)), chunk=4096, depth=2)
    stream.read(10)
    del stream
    gc.collect()
    _wait_for_no_threads()
    assert not _readahead_threads()
