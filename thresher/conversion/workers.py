"""Encoding worker processes built on public multiprocessing APIs, each fed through its own pipes.

``multiprocessing.Pool`` was replaced because of what it does on Ctrl-C and on a dead
parent: its workers take the terminal's SIGINT and print tracebacks, its shutdown can wait
forever on a worker or on its own threads, and its workers hold both ends of the task pipe,
so they outlive a killed main process. Here only the main process reacts to Ctrl-C: the
fork server and the workers start with SIGINT blocked and then ignore it, and a worker ends
when told, when its task pipe reports the main process gone, or when it is killed. Every
wait for a worker has a bound.

Each worker has a task pipe (main → worker) and a result pipe (worker → main), so the main
process knows which worker holds which item, answers arrive per worker in the order sent,
and a worker's end (its process sentinel) is noticed at once. Items wait in the main
process until a worker has room (at most two each), so a worker that finishes early takes
the next item instead of idling behind a slow one. A thread in each worker
empties its task pipe as items arrive, so a main process sending a task never waits on a
worker that is itself waiting for the main process to take a result.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from thresher.conversion.heap import keep_freed_memory
from thresher.errors import WorkerDied

PIPE_BYTES = 1 << 20
IN_FLIGHT = 2  # items sent to one worker and not yet answered: one at work, one waiting in its pipe
STOP_SECONDS = 2.0  # how long a worker may take to exit before it is killed
DIED = ("an encoding worker process ended mid-conversion (killed, perhaps by the out-of-memory killer, or "
        "crashed); finished shards are kept, and running the same command again resumes. With large images, "
        "fewer --workers use less memory.")
DIED_STARTING = ("an encoding worker process ended as it started (exit status {code}; its own error is printed "
                 "above). Workers first import the script that started them: in a script, keep "
                 'thresher.prepare(...) under `if __name__ == "__main__":`.')


class Ticket:
    """An item sent to a worker; its answer arrives in that worker's result pipe, in order."""

    __slots__ = ("pool", "worker", "done", "ok", "value")

    def __init__(self, pool: WorkerPool, worker: _Worker | None) -> None:
        self.pool, self.worker = pool, worker
        self.done = self.ok = False
        self.value: Any = None

    def ready(self) -> bool:
        return self.pool.ready(self)

    def get(self) -> Any:
        return self.pool.result(self)


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    tasks: Connection
    results: Connection
    waiting: deque[Ticket] = field(default_factory=deque)  # sent, answer not yet read


class WorkerPool:
    """``count`` processes running ``func`` on items sent to them; see the module docstring.

    ``start`` blocks SIGINT in the calling thread, so it must not run on the main thread; a
    fork server it launches inherits that and never sees the terminal's Ctrl-C.
    """

    def __init__(self) -> None:
        self.workers: list[_Worker] = []
        self.backlog: deque[tuple[Ticket, Any]] = deque()  # submitted, not yet sent to a worker
        self.lock = threading.Lock()
        self.stopped = False
        self.answered = False  # has any worker sent a result yet

    def start(self, func: Callable[[Any], Any], count: int, initializer: Callable[..., None] | None,
              initargs: tuple[Any, ...]) -> WorkerPool:
        """Start the workers; after :meth:`terminate`, end each one that was still starting."""
        if threading.current_thread() is threading.main_thread():
            raise RuntimeError("start worker processes from another thread; the main one must keep Ctrl-C")
        # The fork server inherits this thread's signal mask, so SIGINT stays blocked in it (and
        # the workers it forks) until they ignore it. Starting multiprocessing's resource tracker
        # unblocks SIGINT in the calling thread afterwards, so it is started first.
        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # this thread only
        context = multiprocessing.get_context("forkserver")
        # Imported once in the fork server (if this starts it) instead of in every worker: importing
        # thresher is a real part of a fresh worker's start-up. "__main__" is multiprocessing's
        # own default (the caller's script, imported once there rather than in every worker).
        context.set_forkserver_preload(["__main__", *sorted({func.__module__, __name__})])
        try:
            for _ in range(count):
                worker = _start_worker(context, func, initializer, initargs)
                with self.lock:
                    late = self.stopped
                    if not late:
                        self.workers.append(worker)
                if late:
                    _finish([worker], kill=True)
                    break
        except BaseException:
            self.terminate()
            raise
        return self

    def connections(self) -> list[Connection]:
        return [c for w in self.workers for c in (w.tasks, w.results)]

    def submit(self, item: Any) -> Ticket:
        """Queue ``item``; it goes to the first worker with room, so a slow item never idles the others."""
        ticket = Ticket(self, None)
        self.backlog.append((ticket, item))
        self._dispatch()
        return ticket

    def _dispatch(self) -> None:
        """Hand queued items to workers holding fewer than ``IN_FLIGHT`` (dynamic balancing)."""
        while self.backlog:
            worker = min(self.workers, key=lambda w: len(w.waiting))
            if len(worker.waiting) >= IN_FLIGHT:
                return
            ticket, item = self.backlog.popleft()
            try:
                worker.tasks.send(item)
            except OSError:  # a closed pipe: the worker is gone
                raise self._died(worker) from None
            ticket.worker = worker
            worker.waiting.append(ticket)

    def ready(self, ticket: Ticket) -> bool:
        for worker in self.workers:
            while not ticket.done and worker.waiting and worker.results.poll():
                self._read(worker)
        return ticket.done

    def result(self, ticket: Ticket) -> Any:
        """The answer to ``ticket`` (its error raised here); WorkerDied if any worker ends first."""
        by_sentinel = {w.process.sentinel: w for w in self.workers}
        by_pipe = {w.results: w for w in self.workers}
        while not ticket.done:
            ready = wait([w.results for w in self.workers if w.waiting] + list(by_sentinel))
            answered = [by_pipe[r] for r in ready if r in by_pipe]
            if not answered:  # a worker exited, and with it the items it held
                raise self._died(next(by_sentinel[r] for r in ready if r in by_sentinel))
            for worker in answered:
                self._read(worker)
        if not ticket.ok:
            raise ticket.value
        return ticket.value

    def _read(self, worker: _Worker) -> None:
        try:
            ok, value = worker.results.recv()
        except (EOFError, OSError):
            raise self._died(worker) from None
        self.answered = True
        ticket = worker.waiting.popleft()
        ticket.ok, ticket.value, ticket.done = ok, value, True
        self._dispatch()

    def _died(self, worker: _Worker) -> WorkerDied:
        """The error for a worker that ended: one that failed as it started says so, not "killed"."""
        worker.process.join(STOP_SECONDS)  # it has ended (its pipe or sentinel said so): its status is a moment away
        code = worker.process.exitcode
        if not self.answered and code is not None and code > 0:
            return WorkerDied(DIED_STARTING.format(code=code))
        return WorkerDied(DIED)

    def close(self) -> None:
        """Let every worker finish what it holds and exit; kill one that takes too long."""
        self._stop(kill=False)

    def terminate(self) -> None:
        """End every worker now (and any that ``start`` is still bringing up)."""
        self._stop(kill=True)

    def _stop(self, kill: bool) -> None:
        with self.lock:
            self.stopped = True
            workers, self.workers = self.workers, []
        _finish(workers, kill)


def _start_worker(context: Any, func: Callable[[Any], Any], initializer: Callable[..., None] | None,
                  initargs: tuple[Any, ...]) -> _Worker:
    task_reader, task_writer = context.Pipe(duplex=False)
    result_reader, result_writer = context.Pipe(duplex=False)
    for end in (task_writer, result_reader):
        _enlarge(end)
    process = context.Process(target=serve, args=(func, initializer, initargs, task_reader, result_writer),
                              name="thresher-encoder", daemon=True)
    try:
        process.start()
    finally:
        task_reader.close()  # the worker has its own copies now: a dead worker reads as a closed pipe
        result_writer.close()
    return _Worker(process, task_writer, result_reader)


def _enlarge(end: Connection) -> None:
    """Pipes of 1 MiB (Linux): a unit's result (a few encoded photos) then moves in one write
    instead of several rounds of the default pipe size, each waking the other side."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if setsize is not None:
        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep the default
            fcntl.fcntl(end.fileno(), setsize, PIPE_BYTES)


def _finish(workers: list[_Worker], kill: bool) -> None:
    """Ask the workers to exit after their items (``None`` as the next task), or end them now;
    wait a bounded time, then kill what is left."""
    for worker in workers:
        if kill:
            worker.process.terminate()
        else:
            with contextlib.suppress(OSError):  # already gone
                worker.tasks.send(None)
    deadline = time.monotonic() + STOP_SECONDS
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(STOP_SECONDS)
        worker.tasks.close()
        worker.results.close()


# -- in the worker process ---------------------------------------------------------------------------


def serve(func: Callable[[Any], Any], initializer: Callable[..., None] | None, initargs: tuple[Any, ...],
          tasks: Connection, results: Connection) -> None:
    """A worker's life: answer each task with ``(True, func(task))`` or ``(False, error)`` until told to stop.

    The terminal's Ctrl-C reaches every process of its group; the main process decides what
    happens, so the worker ignores it (and drops one that arrived while SIGINT was blocked).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_memory()  # a worker exists only to run func: let it keep its heap (see thresher.conversion.heap)
    failed: BaseException | None = None
    if initializer is not None:
        try:
            initializer(*initargs)
        except Exception as exc:  # noqa: BLE001 - every task is answered with it
            failed = exc
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    threading.Thread(target=_receive, args=(tasks, inbox), name="thresher-tasks", daemon=True).start()
    while (item := inbox.get()) is not None:
        try:
            if failed is not None:
                raise failed
            answer: tuple[bool, Any] = (True, func(item))
        except Exception as exc:  # noqa: BLE001 - raised in the main process instead
            answer = (False, _sendable(exc))
        try:
            results.send(answer)
        except OSError:  # the main process is gone: nobody wants the rest
            return


def _receive(tasks: Connection, inbox: queue.SimpleQueue[Any]) -> None:
    """Move tasks from the pipe to ``inbox`` as they come; ``None`` once the main process is gone or says stop."""
    while True:
        try:
            item = tasks.recv()
        except (EOFError, OSError):
            item = None
        inbox.put(item)
        if item is None:
            return


def _sendable(exc: Exception) -> Exception:
    """``exc`` if the main process can unpickle it, else a RuntimeError carrying its text."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any failure means: send the text instead
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc
