"""Benchmark 5: peak memory (RSS) of converting 100,000 against 1,000,000 MNIST-format records.

A streaming converter holds one writer batch at a time, so its peak must not grow with the
dataset. Each ``prepare`` (train split to LMDB, sources already downloaded) runs in a fresh
child process that reports its own peak RSS (``VmHWM``); a child that only imports the same modules
gives the floor every Python process pays. Run as ``python -m benchmarks.memory SPEC.json``
it is that child. Targets (issue): 1M peak ≤ 1.2× the 100k peak, and under 500 MB.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import MB, Table, Target, number, rate
from benchmarks.inputs import Workspace

NAME = "memory"
SIZES = (100_000, 1_000_000)
TEST_RECORDS = 1_000  # the recipe wants its test files too; only train is converted
GROWTH = Target(1.2, at_least=False)
CEILING = Target(500, at_least=False, unit=" MB")
REPO = Path(__file__).resolve().parents[1]
SAMPLE_SECONDS = 0.01


def run(ws: Workspace, quick: bool) -> Table:
    table = Table(NAME, "Peak memory (RSS) converting MNIST-format train splits to LMDB")
    floor = _child(ws, {"mode": "imports"})["peak_mb"]
    table.add("child that only imports thresher, numpy, lmdb", f"{floor:.0f} MB", "—", None, "—")
    table.analysis.append(f"* Imports alone: {floor:.0f} MB. Below, RssAnon is heap (Python objects, buffers, "
                          "LMDB's dirty pages before a commit); RssFile is file pages mapped and touched (shared "
                          "libraries, LMDB's memory map).")
    peaks: list[float] = []
    for count in (ws.scaled(n) for n in SIZES):
        inputs = ws.mnist(train=count, test=TEST_RECORDS)
        root = ws.fresh(f"memory-{count}")
        result = _child(ws, {"mode": "prepare", "root": str(root), "download_dir": str(ws.downloads(inputs)),
                             "mirror": str(inputs.mirror), "checksums": str(inputs.checksums), "train": count})
        ws.discard(inputs)
        shutil.rmtree(root, ignore_errors=True)
        if result["records"] != count:
            table.failures.append(f"{count:,}-record run wrote {result['records']:,} records")
        peak = result["peak_mb"]
        if peaks:
            table.add(f"{count:,} records", f"{peak:.0f} MB peak ({result['seconds']:.1f} s, "
                      f"{rate(count, result['seconds'], 'rec')})", f"{peaks[0]:.0f} MB at {ws.scaled(SIZES[0]):,}",
                      peak / peaks[0], f"{number(peak / peaks[0])}× the smaller run's peak", GROWTH)
            table.add(f"{count:,} records, absolute", f"{peak:.0f} MB peak", "—", peak, "—", CEILING)
        else:
            table.add(f"{count:,} records", f"{peak:.0f} MB peak ({result['seconds']:.1f} s, "
                      f"{rate(count, result['seconds'], 'rec')})", "—", None, "—")
        peaks.append(peak)
        sampled = ", ".join(f"{name} {mb:.0f} MB" for name, mb in result["sampled_mb"].items())
        table.analysis.append(f"* {count:,} records: peak RSS {peak:.0f} MB (VmHWM); highest values seen when "
                              f"sampling every {SAMPLE_SECONDS * 1000:.0f} ms: {sampled}.")
    _photo_rows(table, ws)
    table.notes += [
        "Each run: `thresher.prepare('mnist', format='lmdb', splits=['train'])` in a fresh child process, "
        "sources already downloaded (`download_dir=`); peak = the child's `VmHWM` at its end "
        "(its own peak RSS; `ru_maxrss` would include the parent's, as Linux keeps it across exec). "
        f"Inputs are synthetic idx.gz files written block by block; the test files hold {TEST_RECORDS:,} images.",
        f"MB = 10^6 bytes. Peak minus the imports-only child: {', '.join(f'{p - floor:.0f} MB' for p in peaks)}.",
    ]
    if quick:
        table.notes.append("--quick sizes: the smaller run may not fill even one writer batch, so growth between "
                           "the two is expected here; only the full-size comparison means something.")
    table.analysis.append("")
    return table


PHOTO_CLASSES = 100
PHOTO_SIZES = (10_000, 100_000)


def _photo_rows(table: Table, ws: Workspace) -> None:
    """ImageNet-layout train splits of 10,000 and 100,000 photos: peak memory must not follow the count."""
    peaks: list[float] = []
    for count in (ws.scaled(n) for n in PHOTO_SIZES):
        inputs = ws.imagenet(classes=PHOTO_CLASSES, per_class=max(1, count // PHOTO_CLASSES), tiny=True)
        root = ws.fresh(f"memory-photos-{count}")
        result = _child(ws, {"mode": "imagenet", "root": str(root), "download_dir": str(inputs.mirror),
                             "checksums": str(inputs.checksums)})
        ws.discard(inputs)
        shutil.rmtree(root, ignore_errors=True)
        peak = result["peak_mb"]
        measured = f"{peak:.0f} MB peak ({result['seconds']:.1f} s, {rate(result['records'], result['seconds'], 'img')})"
        name = f"ImageNet-layout train, {result['records']:,} photos in {PHOTO_CLASSES} class tars"
        if peaks:
            table.add(name, measured, f"{peaks[0]:.0f} MB at {ws.scaled(PHOTO_SIZES[0]):,}", peak / peaks[0],
                      f"{number(peak / peaks[0])}× the smaller run's peak", GROWTH)
        else:
            table.add(name, measured, "—", None, "—")
        peaks.append(peak)
    table.notes.append(f"ImageNet-layout runs: `thresher.prepare('imagenet', format='lmdb', splits=['train'], "
                       f"checksums=...)` from placed files in a fresh child process; every photo the same 96×96 "
                       f"JPEG, {PHOTO_CLASSES} class tars, so only the number of records grows.")


def _child(ws: Workspace, spec: dict[str, Any]) -> dict[str, Any]:
    path = ws.fresh("memory-spec") / "spec.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-m", "benchmarks.memory", str(path)], cwd=REPO, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Import (and, in "prepare" mode, convert), then report this process's peak RSS."""
    import lmdb  # noqa: F401 - imported for its share of the floor
    import numpy  # noqa: F401

    import thresher

    result: dict[str, Any] = {"records": 0, "seconds": 0.0}
    sampler = _Sampler()
    if spec["mode"] == "prepare":
        expect_records(spec["train"])
        sampler.start()
        start = time.perf_counter()
        manifest = thresher.prepare("mnist", root=spec["root"], format="lmdb", splits=["train"],
                                    download_dir=spec["download_dir"], mirror=spec["mirror"], offline=True,
                                    checksums=spec["checksums"], progress=False)
        result = {"records": manifest.splits["train"].records, "seconds": time.perf_counter() - start}
        sampler.stop()
    elif spec["mode"] == "imagenet":
        sampler.start()
        start = time.perf_counter()
        manifest = thresher.prepare("imagenet", root=spec["root"], format="lmdb", splits=["train"],
                                    download_dir=spec["download_dir"], offline=True, checksums=spec["checksums"],
                                    progress=False)
        result = {"records": manifest.splits["train"].records, "seconds": time.perf_counter() - start}
        sampler.stop()
    result["peak_mb"] = peak_rss_bytes() / MB
    result["sampled_mb"] = {k: v / MB for k, v in sampler.peaks.items()}
    return result


def expect_records(train: int) -> None:
    """Tell the MNIST recipe that its train split holds ``train`` records.

    Recipes refuse files claiming far more records than the publisher says (1.5 times), which a
    synthetic MNIST of a million records does; this run means it.
    """
    from dataclasses import replace

    from thresher.registry import get_recipe

    recipe = get_recipe("mnist")
    recipe.splits = tuple(replace(s, num_records=train) if s.name == "train" else s for s in recipe.splits)


class _Sampler(threading.Thread):
    """Polls /proc/self/status to split the peak into anonymous memory and mapped files (e.g. LMDB's map)."""

    FIELDS = ("RssAnon", "RssFile", "RssShmem")

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peaks: dict[str, int] = dict.fromkeys(self.FIELDS, 0)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(SAMPLE_SECONDS):
            self.sample()

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.sample()

    def sample(self) -> None:
        try:
            lines = Path("/proc/self/status").read_text().splitlines()
        except OSError:
            return
        for line in lines:
            name = line.split(":", 1)[0]
            if name in self.peaks:
                self.peaks[name] = max(self.peaks[name], int(line.split()[1]) * 1024)


def peak_rss_bytes() -> int:
    """This process's peak RSS: ``VmHWM``, not ``ru_maxrss``.

    Linux carries ``ru_maxrss`` across ``execve``, and subprocess starts the child from a
    vfork of the benchmark process, so ``ru_maxrss`` reports at least the parent's peak
    (hundreds of MB after generating inputs). ``VmHWM`` belongs to the child's own address space.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # elsewhere: the best there is


if __name__ == "__main__":
    print(json.dumps(child(json.loads(Path(sys.argv[1]).read_text()))))
