"""Channel order of stored pixels: RGB, Caffe's BGR, or one grey channel."""

from __future__ import annotations

from collections.abc import Sequence

from thresher.lazy import np

CHANNEL_ORDERS: tuple[str, ...] = ("RGB", "BGR", "GRAY")


def needs_swap(channel_order: str, channels: int) -> bool:
    """Whether RGB pixels must be swapped to BGR (and back) for this channel order."""
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"unknown channel order {channel_order!r}; expected one of {', '.join(CHANNEL_ORDERS)}")
    if channel_order == "GRAY" and channels != 1:
        raise ValueError(f"channel order GRAY needs 1-channel images, got {channels} channels")
    return channel_order == "BGR" and channels >= 3


def swapped_order(channels: int) -> list[int]:
    """Channel indexes of swap_rb: R and B exchanged, alpha and beyond in place."""
    return [2, 1, 0, *range(3, channels)] if channels >= 3 else list(range(channels))


def interleave(planar: np.ndarray, order: Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
    """(N, C, H, W) -> a new (N, H, W, C) whose channel i is ``planar``'s channel ``order[i]``.

    Copied one channel at a time: numpy's copy of the whole transposed view moves one byte
    per step with the channel axis innermost, which is several times slower. Given ``out``,
    the result goes there, cast to its dtype in the same copy (unchecked, like ``astype``).
    """
    n, c, h, w = planar.shape
    if out is None:
        out = np.empty((n, h, w, c), dtype=planar.dtype)
    for i, source in enumerate(order):
        out[..., i] = planar[:, source]
    return out


def swap_rb(hwc: np.ndarray) -> np.ndarray:
    """RGB(A) <-> BGR(A) on the last axis (a view for 3 channels)."""
    if hwc.shape[-1] == 3:
        return hwc[..., ::-1]
    order = [2, 1, 0, *range(3, hwc.shape[-1])]
    return hwc[..., order]


def from_stored(hwc: np.ndarray, channel_order: str) -> np.ndarray:
    """Stored HWC pixels -> a fresh RGB array."""
    if needs_swap(channel_order, hwc.shape[2]):
        return np.ascontiguousarray(swap_rb(hwc))
    return hwc.copy()
