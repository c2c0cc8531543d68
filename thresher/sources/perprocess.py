"""Files a process keeps open for reading many members of the same archive, by key.

A worker reading one member at a time (an extent of a tar, a member of a zip) would otherwise
reopen its archive for each; a forked child must not share its parent's file offsets, so it
starts with none of them.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class PerProcess(Generic[V]):
    """At most ``limit`` open things of this process by key; the least recently used is closed first."""

    def __init__(self, limit: int, close: Callable[[V], object]) -> None:
        self.limit, self.close = limit, close
        self.pid = os.getpid()
        self.open: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable, opener: Callable[[], V]) -> V:
        """The open thing for ``key``, opened with ``opener`` when this process has none."""
        if self.pid != os.getpid():
            self.open = OrderedDict()  # the parent's: never read through them here
            self.pid = os.getpid()
        found = self.open.get(key)
        if found is not None:
            self.open.move_to_end(key)
            return found
        found = opener()
        self.open[key] = found
        while len(self.open) > self.limit:
            self.close(self.open.popitem(last=False)[1])
        return found
