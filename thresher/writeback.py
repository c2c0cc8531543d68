"""Ask Linux to start writing a file's dirty pages now, so the fsync before a rename is short.

A download is fsynced before it takes its final name (later runs trust its verification
stamp, so it must be on disk). Left to itself the kernel writes nothing back until seconds
later, and that fsync then waits for the whole file. Started every few megabytes as the data
arrives, the writeback keeps up and the final fsync is short (docs/performance.md). Python's
``os`` has no ``sync_file_range``, so the C library's is called directly; elsewhere (or without
glibc's symbol) this does nothing and the fsync simply takes longer.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from functools import cache

SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writeback of dirty pages, do not wait


def start_writeback(fd: int) -> bool:
    """Start writeback of every dirty page of ``fd``'s file; True if the kernel took the request."""
    call = _sync_file_range()
    if call is None:
        return False
    return call(fd, 0, 0, SYNC_FILE_RANGE_WRITE) == 0


@cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]
