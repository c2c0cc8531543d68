"""Ordered, bounded parallel encoding on one machine.

Results come back in input order (so output bytes never depend on scheduling), with a
fixed read-ahead (``multiprocessing.Pool.imap`` would drain a whole dataset into memory
when the writer is slower than the reader). Until the workers have started (a fresh
interpreter and its imports), the main process encodes units itself instead
of waiting. Once they run it stops unless a core is left over: with as many workers as
cores, a third encoder only made every image slower (from cache and time-slice contention;
see docs/performance.md). The worker processes themselves, and what Ctrl-C does to them,
are thresher.conversion.workers' job.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from thresher.conversion import interrupt
from thresher.conversion.workers import PIPE_BYTES, WorkerPool
from thresher.inputs import usable_cores

__all__ = ["PIPE_BYTES", "OrderedPool"]

T = TypeVar("T")
R = TypeVar("R")

START_SECONDS = 2.0  # how long terminate waits for a start in progress


class _Ready(Generic[R]):
    """A result computed in the main process, queued behind the workers' so order is kept."""

    def __init__(self, value: R) -> None:
        self.value = value

    def ready(self) -> bool:
        return True

    def get(self) -> R:
        return self.value


class OrderedPool(Generic[T, R]):
    """``func`` over items in ``workers`` processes plus the main one, results in order.

    One pool serves every split of a ``prepare`` call, so worker start-up is paid once, and
    only when a split's work is worth shipping to other processes.
    """

    def __init__(self, func: Callable[[T], R], workers: int, initializer: Callable[..., None] | None = None,
                 initargs: tuple[Any, ...] = (), window: int | None = None) -> None:
        self.func = func
        if initializer is not None:
            initializer(*initargs)  # the main process encodes too
        self.workers, self.initializer, self.initargs = workers, initializer, initargs
        self.window = window or max(2, workers * 3)
        self.pool: WorkerPool | None = None  # once started: from then on, so stopping reaches starting workers
        self.starting: Future[WorkerPool] | None = None  # done once the workers run (or failed to start)
        self.started = False  # has a worker delivered a result yet
        self.spare_core = workers < usable_cores()  # then the main process keeps helping

    def start(self) -> None:
        """Start the workers (once), in the background: the main process encodes meanwhile."""
        if self.workers > 1 and self.pool is None:
            pool = self.pool = WorkerPool()
            func, workers, initializer, initargs = self.func, self.workers, self.initializer, self.initargs
            self.starting = _in_thread(lambda: pool.start(func, workers, initializer, initargs))

    def map(self, items: Iterable[T], *, parallel: bool = True) -> Iterator[R]:
        """Results in input order. ``parallel=False``: all in this process, for work cheaper than
        shipping it (records that need no decoding, from a stream only this process reads)."""
        if parallel:
            self.start()
        if self.pool is None or not parallel:
            for item in items:
                interrupt.check()
                yield self.func(item)
            return
        source = iter(items)
        pending: deque[Any] = deque()
        exhausted = False
        while True:
            interrupt.check()  # a Ctrl-C that Python swallowed (see thresher.conversion.interrupt)
            pool = self._pool_if_running()
            while pool is not None and not exhausted and len(pending) < self.window:
                item = next(source, _END)
                if item is _END:
                    exhausted = True
                else:
                    pending.append(pool.submit(item))
            if not pending and exhausted:
                return
            if pending and (pending[0].ready() or exhausted or len(pending) >= 2 * self.window
                            or (self.started and not self.spare_core)):
                head = pending.popleft()
                self.started = self.started or not isinstance(head, _Ready)
                yield head.get()  # a worker's error, or WorkerDied if one ended, is raised here
                continue
            item = next(source, _END)  # the workers are still starting: help instead of waiting
            if item is _END:
                exhausted = True
            else:
                pending.append(_Ready(self.func(item)))

    def _pool_if_running(self) -> WorkerPool | None:
        if self.starting is not None:
            if not self.starting.done():
                return None
            starting, self.starting = self.starting, None
            starting.result()  # raises if the workers could not be started
        return self.pool

    def close(self) -> None:
        """Let the workers finish and exit (after they start, if they are starting)."""
        if self.pool is None:
            return
        try:
            if self.starting is not None:
                self.starting.result()
            self.pool.close()
        except BaseException:  # Ctrl-C while waiting, or the workers could not start
            self.terminate()
            raise
        self.pool = self.starting = None

    def terminate(self) -> None:
        """End the workers now, started or still starting; every wait here is bounded."""
        pool, starting, self.pool, self.starting = self.pool, self.starting, None, None
        if pool is None:
            return
        pool.terminate()  # ends running workers, and the start ends each one it brings up later
        if starting is not None:
            # Give the start a moment to end a worker it was bringing up; past that, that worker
            # still ends by itself when this process exits and its task pipe closes.
            with contextlib.suppress(Exception):  # a start error: the error being handled is the one to report
                starting.result(timeout=START_SECONDS)

    def __enter__(self) -> OrderedPool[T, R]:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self.close()
        else:
            self.terminate()


_END: Any = object()


def _in_thread(make: Callable[[], R]) -> Future[R]:
    """``make()`` on a daemon thread, its result or error in the future."""
    future: Future[R] = Future()

    def run() -> None:
        try:
            future.set_result(make())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
            future.set_exception(exc)

    threading.Thread(target=run, name="thresher-pool-start", daemon=True).start()
    return future

