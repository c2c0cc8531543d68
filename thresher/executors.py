"""Ordered, bounded parallel map: results come back in input order, with a fixed read-ahead.

``multiprocessing.Pool.imap`` drains its input as fast as it can, which holds a whole
dataset in memory when the writer is slower than the reader; this keeps at most
``window`` chunks in flight, so memory stays flat whatever the dataset size.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    func: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
    window: int | None = None,
) -> Iterator[R]:
    """``map(func, items)`` over ``workers`` processes (inline when 1), in order, bounded."""
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(func, items)
        return
    window = window or workers * 3
    context = multiprocessing.get_context("forkserver")
    with context.Pool(workers, initializer=initializer, initargs=initargs) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.apply_async(func, (item,)))
            if len(pending) >= window:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
