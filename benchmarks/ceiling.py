"""The machine's own limit on a 2-worker speed-up, measured with bare loops beside thresher's.

On a 2-vCPU VM two copies of the same loop do not finish in the time of one (shared caches and
memory, the host's scheduling of the vCPUs); without this ceiling a missed speed-up target could
not say whether thresher or the machine fell short.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.common import Table, number, timed

_CEILING_WORK: Callable[[], Any] | None = None  # what the forked processes of parallel_ceiling run


def _timed_ceiling_work() -> float:
    assert _CEILING_WORK is not None
    return timed(_CEILING_WORK)[0]


def parallel_ceiling(work: Callable[[], Any], *, repeats: int = 3) -> tuple[float, float]:
    """Best seconds of ``work()`` alone in a process, and of two copies at once in two processes.

    Two copies of a bare loop finish in ``two`` where one takes ``one``: ``2 * one / two`` is the
    most any 2-worker speed-up can reach on this machine (the cores share caches, memory and,
    in a VM, the host's scheduling), the ceiling beside which a conversion's speed-up is read.
    Runs alternate, so a disturbance of the machine hits both sides.
    """
    global _CEILING_WORK
    import multiprocessing

    _CEILING_WORK = work
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:  # forked: the work and its data are inherited
            one = two = float("inf")
            for _ in range(max(1, repeats)):
                one = min(one, pool.apply(_timed_ceiling_work))
                start = time.perf_counter()  # timed here: the pair's wall time, whichever process ran what
                for pending in [pool.apply_async(_timed_ceiling_work) for _ in range(2)]:
                    pending.get()
                two = min(two, time.perf_counter() - start)
    finally:
        _CEILING_WORK = None
    return one, two


CEILING_PHOTOS = 1_000  # per bare loop: a few seconds, repeated


def ceiling_row(table: Table, name: str, loop: Any, speedups: dict[str, float]) -> float:
    """The machine's own limit on a 2-worker speed-up, from a bare loop, beside thresher's ``speedups``; returned."""
    one, two = parallel_ceiling(loop)
    ceiling = 2 * one / two
    shares = "; ".join(f"{label} {speedup / ceiling:.0%} of it" for label, speedup in speedups.items())
    table.add(f"{name} (the machine's ceiling for 2 workers)", f"{two:.2f} s for twice the photos",
              f"one loop: {one:.2f} s", ceiling, f"{number(ceiling)}× speed-up ({shares})", None)
    return ceiling


def pillow_loop(jpegs: list[bytes]) -> None:
    """What the Pillow path does to a photo, bare: decode, RGB, bilinear 256×256, JPEG q95."""
    for data in jpegs:
        with Image.open(io.BytesIO(data)) as img:
            img.convert("RGB").resize((256, 256), Image.Resampling.BILINEAR).save(io.BytesIO(), "JPEG", quality=95)


def opencv_loop(jpegs: list[bytes]) -> None:
    import cv2

    cv2.setNumThreads(1)
    for data in jpegs:
        cv2.imencode(".jpg", cv2.resize(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), (256, 256),
                                        interpolation=cv2.INTER_LINEAR), [cv2.IMWRITE_JPEG_QUALITY, 95])


def tar_members(path: Any) -> list[bytes]:
    import tarfile

    with tarfile.open(path) as tar:
        return [tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()]  # type: ignore[union-attr]
