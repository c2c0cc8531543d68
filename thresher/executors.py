"""Ordered, bounded parallel encoding on one machine.

Results come back in input order (so output bytes never depend on scheduling), with a
fixed read-ahead (``multiprocessing.Pool.imap`` would drain a whole dataset into memory
when the writer is slower than the reader). Until the workers have started (a fresh
interpreter and its imports, about 0.3 s), the main process encodes units itself instead
of waiting. Once they run it stops unless a core is left over: with as many workers as
cores, a third encoder only made every image slower (1.96 ms instead of 1.55 ms per
Flowers photo measured on two cores, from cache and time-slice contention).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.pool
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from thresher.errors import WorkerDied
from thresher.heap import keep_freed_memory

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
        self.pool: _QuietPool | None = None
        self.workers: set[int] = set()  # the pool's worker pids; a change means one died
        self.starting: Future[_QuietPool] | None = None
        self.started = False  # has a worker delivered a result yet
        self.spare_core = workers < _usable_cores()  # then the main process keeps helping
        if workers > 1:
            # Starting a fork server blocks for about 0.25 s; the main process encodes meanwhile.
            self.starting = _in_thread(lambda: _start_pool(func, workers, initializer, initargs))

    def map(self, items: Iterable[T]) -> Iterator[R]:
        if self.starting is None and self.pool is None:
            yield from map(self.func, items)
            return
        source = iter(items)
        pending: deque[Any] = deque()
        exhausted = False
        while True:
            pool = self._pool_if_running()
            while pool is not None and not exhausted and len(pending) < self.window:
                item = next(source, _END)
                if item is _END:
                    exhausted = True
                else:
                    pending.append(pool.apply_async(self.func, (item,)))
            if not pending and exhausted:
                return
            if pending and (pending[0].ready() or exhausted or len(pending) >= 2 * self.window
                            or (self.started and not self.spare_core)):
                head = pending.popleft()
                self.started = self.started or not isinstance(head, _Ready)
                yield head.get() if isinstance(head, _Ready) else self._result(head)
                continue
            item = next(source, _END)  # the workers are still starting: help instead of waiting
            if item is _END:
                exhausted = True
            else:
                pending.append(_Ready(self.func(item)))

    def _pool_if_running(self) -> _QuietPool | None:
        if self.starting is not None and self.starting.done():
            starting, self.starting = self.starting, None
            self.pool = starting.result()  # raises if the workers could not be started
            self.workers = self.pool.worker_pids()
        return self.pool

    def _result(self, pending: multiprocessing.pool.AsyncResult[R]) -> R:
        """A worker's result; an error instead of waiting forever if a worker died.

        ``multiprocessing.Pool`` replaces a worker that dies and silently loses the unit it
        was encoding, so waiting for that unit would never end.
        """
        while True:
            try:
                return pending.get(timeout=_CHECK_EVERY)
            except multiprocessing.TimeoutError:
                assert self.pool is not None
                if self.pool.worker_pids() != self.workers:
                    raise WorkerDied(
                        "an encoding worker process ended mid-conversion (killed, perhaps by the out-of-memory "
                        "killer, or crashed); finished shards are kept, and running the same command again "
                        "resumes. With large images, fewer --workers use less memory."
                    ) from None

    def _started_pool(self) -> _QuietPool | None:
        if self.starting is not None:
            starting, self.starting = self.starting, None
            self.pool = starting.result()
        return self.pool

    def close(self) -> None:
        pool, self.pool = self._started_pool(), None
        if pool is not None:
            pool.close()
            pool.join()

    def terminate(self) -> None:
        try:
            pool = self._started_pool()
        except Exception:  # noqa: BLE001 - the error being handled is the one to report
            pool = None
        self.pool = None
        if pool is not None:
            pool.terminate()
            pool.join()

    def __enter__(self) -> OrderedPool[T, R]:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self.close()
        else:
            self.terminate()


_END: Any = object()
PIPE_BYTES = 1 << 20
_CHECK_EVERY = 1.0  # seconds between checks that every worker is alive, while waiting for one


class _QuietPool(multiprocessing.pool.Pool):
    """A Pool whose worker-maintenance thread sleeps while results are in transit.

    CPython's Pool also wakes that thread whenever its result pipe is readable, which, with
    results of hundreds of kilobytes (16 encoded photos), is most of the time: measured, it
    woke 11,500-13,500 times in a 2.4 s two-worker conversion of 2,000 photos, and burned
    0.6 CPU-seconds of a 6 s one of 5,000, CPU the workers needed. The pipe only matters for ``maxtasksperchild`` (never used here);
    worker exits and pool changes still wake it.
    """

    def _get_sentinels(self) -> list[Any]:
        return [self._change_notifier._reader]  # type: ignore[attr-defined]

    def _setup_queues(self) -> None:
        """Pipes of 1 MiB (Linux): a unit's result (16 photos, ~300 KB) then moves in one write
        instead of five 64 KB rounds that each wake the other side. Measured on 5,000 photos
        with two workers: 4.67 s -> 4.57 s (medians of six alternating runs; every pair faster)."""
        super()._setup_queues()  # type: ignore[misc]
        setsize = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
        if setsize is None:
            return
        for queue in (self._inqueue, self._outqueue):  # type: ignore[attr-defined]
            with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep the default
                fcntl.fcntl(queue._reader.fileno(), setsize, PIPE_BYTES)

    def worker_pids(self) -> set[int]:
        return {process.pid for process in self._pool}  # type: ignore[attr-defined]


def _start_pool(func: Callable[..., Any], workers: int, initializer: Callable[..., None] | None,
                initargs: tuple[Any, ...]) -> _QuietPool:
    context = multiprocessing.get_context("forkserver")
    # Imported once in the fork server (if this starts it) instead of in every worker: importing
    # thresher cost each fresh worker about 0.15 CPU-seconds. "__main__" is multiprocessing's
    # own default (the caller's script, imported once there rather than in every worker).
    context.set_forkserver_preload(["__main__", *sorted({func.__module__, _start_worker.__module__})])
    return _QuietPool(workers, initializer=_start_worker, initargs=(initializer, initargs), context=context)


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


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _start_worker(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    """A worker exists only to run ``func``: let it keep its heap between items (see thresher.heap)."""
    keep_freed_memory()
    if initializer is not None:
        initializer(*initargs)
