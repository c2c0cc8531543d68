"""Bounds on the numbers a user types, checked the same way for the CLI and the Python API.

A typo such as ``--resize 100000x100000`` or ``--workers 0`` should be refused at once with the
value named, not found later as a MemoryError, an endless run or a silently chosen default.
"""

from __future__ import annotations

import math
import os
import re

MAX_WORKERS = 512  # more processes than any one machine runs usefully; a typo like 10000 would fork-bomb it
MAX_SHARD_SIZE = 1 << 40  # 1 TiB: past this a "shard" is the whole dataset, and a copy of it rarely fits anywhere
# Each resized side at most 8192 pixels: covers 8K frames (7680x4320) and large tiles, keeps one resized
# image under Pillow's decompression-bomb threshold and one raw RGB record at most 192 MiB.
MAX_RESIZE_SIDE = 8192
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def check_workers(workers: object) -> int:
    """The number of conversion processes, 1 to MAX_WORKERS; ``"auto"`` is one per usable core."""
    if isinstance(workers, str) and workers.strip().lower() == "auto":
        return min(usable_cores(), MAX_WORKERS)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be a whole number from 1 to {MAX_WORKERS}, or 'auto', not {workers!r}")
    return workers


def parse_workers(text: str) -> int:
    """``--workers N`` or ``--workers auto``, as checked by :func:`check_workers`."""
    if text.strip().lower() == "auto":
        return check_workers(text)
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"workers must be a whole number or 'auto', not {text!r}") from None
    return check_workers(value)


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (a container's or taskset's limit), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def check_shard_size(size: object) -> int:
    """A shard's target size in bytes, 1 to MAX_SHARD_SIZE."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SHARD_SIZE:
        raise ValueError(f"shard size must be a whole number of bytes from 1 to {MAX_SHARD_SIZE} (1T), not {size!r}")
    return size


def parse_size(text: str) -> int:
    """``512M``, ``1G``, ``1.5GiB``, ``4096``: a size in bytes, or ValueError naming the text."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"shard size must be a number with an optional K, M, G or T suffix, such as 512M, "
                         f"not {text!r}")
    value = float(match.group(1)) * _UNITS[match.group(2).upper()]
    if not math.isfinite(value) or value > MAX_SHARD_SIZE:
        raise ValueError(f"shard size must be at most 1T, not {text!r}")
    if value < 1:
        raise ValueError(f"shard size must be at least 1 byte, not {text!r}")
    return int(value)


def check_resize(resize: object) -> tuple[int, int]:
    """(height, width), each side 1 to MAX_RESIZE_SIDE pixels."""
    ok = (isinstance(resize, tuple | list) and len(resize) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_RESIZE_SIDE for v in resize))
    if not ok:
        raise ValueError(f"resize must be (height, width) with each side from 1 to {MAX_RESIZE_SIDE} pixels, "
                         f"not {resize!r}")
    return int(resize[0]), int(resize[1])  # type: ignore[index]


def parse_resize_option(text: str) -> tuple[int, int] | int | tuple[()]:
    """``--resize``: as :func:`parse_resize`, or ``none`` (an empty tuple) to keep images as published."""
    return () if text.strip().lower() == "none" else parse_resize(text)


def parse_resize(text: str) -> tuple[int, int] | int:
    """``256x256`` (height x width), or ``short=256`` (the shorter side, aspect kept: an int)."""
    try:
        if text.lower().startswith("short="):
            side = int(text[len("short="):])
            return check_resize((side, side))[0]
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"resize must be HxW such as 256x256, or short=N such as short=256, not {text!r}") from None
    return check_resize((height, width))
