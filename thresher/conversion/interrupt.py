"""Ctrl-C that cannot be lost.

Python raises KeyboardInterrupt wherever the main thread happens to be. When that is a
weakref callback or a ``__del__`` method, Python prints "Exception ignored" and carries on,
and the run finishes as if no Ctrl-C had come. While :func:`remembered` is active a Ctrl-C
is also noted: such a lost interrupt prints nothing, and :func:`check`, called between units
of work, raises it again.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_seen = threading.Event()


@contextmanager
def remembered() -> Iterator[None]:
    """Note every Ctrl-C until the block ends (only where Python's own SIGINT handler is in place)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield  # a caller with its own handling of SIGINT keeps it
        return
    _seen.clear()
    previous_hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        if not (isinstance(info.exc_value, KeyboardInterrupt) and _seen.is_set()):
            previous_hook(info)

    signal.signal(signal.SIGINT, _interrupt)
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.unraisablehook = previous_hook
        _seen.clear()  # later calls in this process (a library user's) start afresh


def check() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C came, even if Python lost the first one."""
    if _seen.is_set():
        raise KeyboardInterrupt


def _interrupt(signum: int, frame: FrameType | None) -> None:
    _seen.set()
    raise KeyboardInterrupt
