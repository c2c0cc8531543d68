"""Ordered, bounded parallel encoding on one machine.

Results come back in input order (so output bytes never depend on scheduling), with a
fixed read-ahead (``multiprocessing.Pool.imap`` would drain a whole dataset into memory
when the writer is slower than the reader). While the oldest result is not ready, the
main process encodes the next unit itself instead of waiting: on a two-core machine it
would otherwise idle between reading and writing.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Ready(Generic[R]):
    """A result computed in the main process, queued behind the pool's so order is kept."""

    def __init__(self, value: R) -> None:
        self.value = value

    def ready(self) -> bool:
        return True

    def get(self) -> R:
        return self.value


class OrderedPool(Generic[T, R]):
    """``func`` over items in ``workers`` processes plus the main one, results in order.

    One pool serves every split of a ``prepare`` call, so worker start-up is paid once.
    """

    def __init__(self, func: Callable[[T], R], workers: int, initializer: Callable[..., None] | None = None,
                 initargs: tuple[Any, ...] = (), window: int | None = None) -> None:
        self.func = func
        if initializer is not None:
            initializer(*initargs)  # the main process encodes too
        self.window = window or max(2, workers * 3)
        self.pool = None
        if workers > 1:
            context = multiprocessing.get_context("forkserver")
            self.pool = context.Pool(workers, initializer=initializer, initargs=initargs)

    def map(self, items: Iterable[T]) -> Iterator[R]:
        if self.pool is None:
            yield from map(self.func, items)
            return
        source = iter(items)
        pending: deque[Any] = deque()
        exhausted = False
        while True:
            while not exhausted and len(pending) < self.window:
                item = next(source, _END)
                if item is _END:
                    exhausted = True
                else:
                    pending.append(self.pool.apply_async(self.func, (item,)))
            if not pending:
                return
            if pending[0].ready() or exhausted or len(pending) >= 2 * self.window:
                yield pending.popleft().get()
                continue
            item = next(source, _END)  # help instead of waiting
            if item is _END:
                exhausted = True
            else:
                pending.append(_Ready(self.func(item)))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()
            self.pool = None

    def terminate(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None

    def __enter__(self) -> OrderedPool[T, R]:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self.close()
        else:
            self.terminate()


_END: Any = object()
