"""sha256 (and md5 when a publisher gives only md5) of bytes as they arrive, or of a whole file.

The one way thresher hashes: downloads hash while they stream, the manifest hashes shards,
``verify`` re-hashes them. It lives outside ``thresher.fetch`` so hashing a shard does not
import the downloader.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1024 * 1024
_IN_FLIGHT = 8  # chunks queued per hasher before update() waits: bounds memory


def _new_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(1, thread_name_prefix="thresher-hash")


# hashlib releases the GIL on large buffers, so hashing on this thread runs beside the
# caller's reading and writing instead of after every chunk. One thread for all hashers keeps
# each hasher's chunks in order and leaks nothing when a hasher is dropped.
_HASHING = _new_pool()


def _after_fork_in_child() -> None:
    """A forked child has no copy of the parent's hashing thread: give it a pool of its own."""
    global _HASHING
    _HASHING = _new_pool()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass(frozen=True)
class Actual:
    """What a file turned out to be."""

    size: int
    sha256: str
    md5: str | None = None


class Hasher:
    """sha256 (always) and md5 (when asked) of a byte stream, plus its size."""

    def __init__(self, md5: bool = False) -> None:
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self.size = 0
        self._pending: deque[Future[None]] = deque()

    def update(self, data: bytes | memoryview) -> None:
        block = bytes(data) if isinstance(data, memoryview) else data  # the caller may reuse its buffer
        self.size += len(block)
        if len(self._pending) >= _IN_FLIGHT:
            self._pending.popleft().result()
        self._pending.append(_HASHING.submit(self._digest, block))

    def _digest(self, block: bytes) -> None:
        self._sha256.update(block)
        if self._md5 is not None:
            self._md5.update(block)

    def _drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def update_from_file(self, path: Path, limit: int | None = None) -> None:
        """Feed the first ``limit`` bytes of ``path`` (all when None): the prefix kept from a resume."""
        with open(path, "rb") as f:
            remaining = limit
            while remaining is None or remaining > 0:
                block = f.read(CHUNK if remaining is None else min(CHUNK, remaining))
                if not block:
                    break
                self.update(block)
                if remaining is not None:
                    remaining -= len(block)

    def result(self) -> Actual:
        self._drain()
        return Actual(
            size=self.size,
            sha256=self._sha256.hexdigest(),
            md5=self._md5.hexdigest() if self._md5 is not None else None,
        )


def hash_file(path: Path, md5: bool = False) -> Actual:
    """Size and sha256 (and md5 when asked) of the file at ``path``."""
    hasher = Hasher(md5=md5)
    hasher.update_from_file(path)
    return hasher.result()
