"""Random access to fixed-layout records without decoding each value: every value checked once, then sliced.

A shard of raw images of one shape with int labels stores every value as the same head, the
pixels and a short label tail. Checking the heads and reading the labels of all values at once
(numpy over the mapped file) costs less than one per-record decode of a few of them; after that
a record is a slice of the map copied into a fresh array. Values that do not match the layout
exactly are left to the codec's own decode, which names what is wrong with them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from thresher.codecs.base import ValueLayout

BLOCK = 1 << 16  # values checked per numpy step, which bounds the index arrays' memory


class FixedRecords:
    """Where each value's pixels start in ``data`` (-1: not in the layout) and its label."""

    def __init__(self, data: Any, values: np.ndarray, layout: ValueLayout) -> None:
        """``values``: an (N, 2) int64 array of each value's offset and length in ``data``."""
        self.layout = layout
        self.size = layout.size
        self.buffer = np.frombuffer(data, np.uint8) if len(data) else np.zeros(0, np.uint8)
        starts = np.full(len(values), -1, np.int64)
        labels = np.zeros(len(values), np.int64)
        for first in range(0, len(values), BLOCK):
            block = slice(first, first + BLOCK)
            starts[block], labels[block] = self._check(values[block])
        self.starts: list[int] = starts.tolist()
        self.labels: list[int] = labels.tolist()

    def _check(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel starts and labels of a block of values (-1 where a value is not in the layout)."""
        offsets, lengths = values[:, 0], values[:, 1]
        head = np.frombuffer(self.layout.head, np.uint8)
        tail_lengths = lengths - len(head) - self.size
        ok = tail_lengths > 0
        ok[ok] = (self.buffer[offsets[ok, None] + np.arange(len(head))] == head).all(axis=1)
        labels = np.zeros(len(values), np.int64)
        for tail_length in np.unique(tail_lengths[ok]).tolist():
            rows = np.flatnonzero(ok & (tail_lengths == tail_length))
            tail_starts = offsets[rows] + len(head) + self.size
            got, good = self.layout.parse_tail(self.buffer[tail_starts[:, None] + np.arange(tail_length)])
            labels[rows] = got
            ok[rows] = good
        return np.where(ok, offsets + len(head), -1), labels

    def record(self, index: int) -> dict[str, Any] | None:
        """Record ``index`` decoded, or None if its value is not in the layout (decode it the slow way)."""
        start = self.starts[index]
        if start < 0:
            return None
        layout = self.layout
        return {layout.image: layout.to_image(self.buffer[start:start + self.size]), layout.label: self.labels[index]}
