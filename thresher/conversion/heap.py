"""Keep freed memory in encoding workers instead of returning it to the kernel after every image.

Decoding a 500×375 JPEG, resizing and re-encoding it allocates and frees a few buffers of
hundreds of kilobytes. In a fresh process glibc serves those from ``mmap`` and gives them
back (or trims the heap) on every free, so each image pays for page faults and zeroed pages
again, where a long-lived process reuses its heap (docs/performance.md has the measurement).
Raising glibc's mmap and trim thresholds makes the worker reuse its heap too.
Only dedicated worker processes do this; a user's own process is left alone.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 128 << 20  # at most this much freed memory stays mapped


def keep_freed_memory() -> bool:
    """Raise glibc's thresholds for this process; False where the C library is not glibc."""
    if not _is_glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError, AttributeError):  # not a name this system knows
        return False
