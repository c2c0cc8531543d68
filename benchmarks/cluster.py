"""Benchmark: photos in independent inputs on a 2-process Dask cluster and on 2 local workers, against one.

Two layouts: Flowers-style (one tar of photos; each photo an input) and ImageNet-style (a tar of
class tars; each class an input, read in place). Each shard task gets the inputs that hold its
records and reads only those, so the cluster should nearly halve the time of one local worker,
and all tasks together should read about the input once. Source bytes are what the workers read
through extents; rchar (bytes passed to read/pread, /proc/<pid>/io) is shown beside it. The
output must equal the local run's. Targets (issues): Dask ≥ 1.7× one local worker, ≤ 1.1× the
input read; ImageNet-style 2 local workers ≥ 1.8× one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import thresher
from benchmarks.ceiling import CEILING_PHOTOS, ceiling_row, pillow_loop, tar_members
from benchmarks.common import MB, Table, Target, number, rate, shard_hashes, timed
from benchmarks.inputs import Inputs, Workspace

NAME = "cluster"
OPTIONS = thresher.ConvertOptions(resize=(256, 256), image_encoding="jpeg")
SHARD_SIZE = 2 << 20  # about a hundred resized photos: enough tasks to keep both workers busy
DASK = Target(1.7, at_least=True)
LOCAL = Target(1.8, at_least=True)
READ = Target(1.1, at_least=False)
RUNS = 2  # of each kind, alternating
# The workers' environment recommended for conversion (README): Dask's default without
# MALLOC_TRIM_THRESHOLD_, which also stops glibc from reusing freed image buffers (measured in
# docs/performance.md); a row below runs Dask's default for comparison.
CONVERSION_ENVIRON = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def run(ws: Workspace, quick: bool) -> Table:
    table = Table(NAME, "Photos in independent inputs: 2 Dask worker processes and 2 local workers against one "
                        "local worker (resize 256×256 + JPEG re-encode)")
    try:
        import distributed
    except ImportError:
        table.failures.append("the dask extra is not installed: pip install 'thresher[dask]'")
        return table
    with _cluster(distributed, CONVERSION_ENVIRON) as (scheduler, client):
        flowers = ws.flowers()
        speedups, flowers_one = _layout(table, ws, client, scheduler, "Flowers-style", flowers, ws.downloads(flowers),
                                        "102flowers.tgz", local_pair=False)
        imagenet = ws.imagenet()
        more, _ = _layout(table, ws, client, scheduler, "ImageNet-style", imagenet, imagenet.mirror,
                          "ILSVRC2012_img_train.tar", local_pair=True, splits=["train"])
        speedups |= more
        ws.discard(imagenet)
    with _cluster(distributed, None) as (scheduler, _):  # Dask's own worker environment, for comparison
        common = _common(flowers, ws.downloads(flowers), None)
        roots = [ws.fresh(f"flowers-dask-default-{run}") for run in range(RUNS)]
        times = [timed(lambda root=root: thresher.prepare(flowers.recipe, root=root, executor="dask",
                                                          scheduler=scheduler, **common))[0] for root in roots]
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
        table.add(f"Flowers-style: Dask with Dask's default worker environment (MALLOC_TRIM_THRESHOLD_=65536; runs: "
                  f"{_listed(times)})", f"{min(times):.1f} s", f"one local worker: {flowers_one:.1f} s",
                  None, f"{number(flowers_one / min(times))}× speed-up")
    jpegs = tar_members(flowers.files["102flowers.tgz"])[:CEILING_PHOTOS]
    ceiling_row(table, "two bare Pillow loops at once, in 2 processes", lambda: pillow_loop(jpegs), speedups)
    table.notes += [
        f"`prepare(NAME, format='lmdb', options=ConvertOptions(resize=(256, 256), image_encoding='jpeg'), "
        f"shard_size={SHARD_SIZE >> 20} MiB)`, sources already in `download_dir`: `workers=1`, `workers=2` and "
        f"`executor='dask'` on a `LocalCluster(n_workers=2, threads_per_worker=1)`, its workers started with "
        f"the environment the README recommends for conversion ({CONVERSION_ENVIRON}: Dask's default less "
        f"MALLOC_TRIM_THRESHOLD_) and their imports done before the timing; {RUNS} runs of each, alternating, the best of each counts. Flowers-style: all three splits of 5,000 synthetic 500×375 photos. "
        f"ImageNet-style: the train split, a tar of 50 class tars of 100 such photos. Machine: "
        f"{os.cpu_count()} logical cores.",
        "Source bytes: what the tasks read of the photos' tar through `thresher.sources.extent`, summed over "
        "both workers. rchar: the growth of `rchar` in /proc/<pid>/io over the run, every read from any file, "
        "including each shard read back to hash it once written. The client's walk of the tar headers to list "
        "the inputs is not a task and counts in neither.",
    ]
    return table


def _layout(table: Table, ws: Workspace, client: Any, scheduler: str, label: str, inputs: Inputs,
            downloads: Path, tar_name: str, *, local_pair: bool, splits: list[str] | None = None
            ) -> tuple[dict[str, float], float]:
    """The rows of one layout; returns its 2-process speed-ups by name, to set beside the machine's ceiling,
    and the best time of one local worker."""
    photos = sum(inputs.records[s] for s in splits) if splits else inputs.total_records
    tar_bytes = inputs.files[tar_name].stat().st_size
    common = _common(inputs, downloads, splits)
    roots = []

    def local(workers: int) -> tuple[float, Any]:
        roots.append(ws.fresh(f"{inputs.recipe}-local{workers}-{len(roots)}"))
        return timed(lambda: thresher.prepare(inputs.recipe, root=roots[-1], workers=workers, **common))

    def dask() -> tuple[float, Any, int, int]:
        before, source_before = client.run(_bytes_read), client.run(_source_bytes_read)
        roots.append(ws.fresh(f"{inputs.recipe}-dask-{len(roots)}"))
        seconds, remote = timed(lambda: thresher.prepare(inputs.recipe, root=roots[-1], executor="dask",
                                                         scheduler=scheduler, **common))
        after, source_after = client.run(_bytes_read), client.run(_source_bytes_read)
        return (seconds, remote, sum(after[w] - before[w] for w in after),
                sum(source_after[w] - source_before[w] for w in source_after))

    # Runs alternate, the best of each counts: single runs on this VM varied by more than the margins.
    kinds: dict[str, Any] = {"one": lambda: local(1), "dask": dask}
    if local_pair:
        kinds["two"] = lambda: local(2)
    runs: dict[str, list[Any]] = {kind: [] for kind in kinds}
    for _ in range(RUNS):
        for kind, run in kinds.items():
            runs[kind].append(run())
    (one, local_manifest), times = min(runs["one"], key=lambda r: r[0]), {k: [r[0] for r in v] for k, v in runs.items()}
    speedups = {}
    table.add(f"{label}: one local worker, {photos:,} photos ({tar_bytes / MB:,.0f} MB; runs: {_listed(times['one'])})",
              f"{one:.1f} s · {rate(photos, one, 'img')}", "—", None, "—")
    if local_pair:
        two = min(times["two"])
        table.add(f"{label}: 2 local workers (runs: {_listed(times['two'])})", f"{two:.1f} s · {rate(photos, two, 'img')}",
                  f"one worker: {one:.1f} s", one / two, f"{number(one / two)}× speed-up", LOCAL)
        speedups[f"{label} local"] = one / two
        _identical(table, f"{label}: 2 local workers' output identical to one's", local_manifest,
                   [manifest for _, manifest in runs["two"]])
    seconds, remote, read, source_read = min(runs["dask"], key=lambda r: r[0])
    source_read = max(r[3] for r in runs["dask"])  # the most any run read
    output = sum(s.bytes for s in remote.splits.values())
    shards = sum(len(s.shards) for s in remote.splits.values())
    table.add(f"{label}: Dask, 2 worker processes, {shards} shard tasks (runs: {_listed(times['dask'])})",
              f"{seconds:.1f} s · {rate(photos, seconds, 'img')}", f"one local worker: {one:.1f} s",
              one / seconds, f"{number(one / seconds)}× speed-up", DASK)
    speedups[f"{label} Dask"] = one / seconds
    table.add(f"{label}: source bytes read by all tasks (the most of {RUNS} runs)", f"{source_read / MB:,.1f} MB",
              f"input: {tar_bytes / MB:,.1f} MB", source_read / tar_bytes, f"{source_read / tar_bytes:.2f}× the input",
              READ)
    table.add(f"{label}: every byte the tasks read (rchar), the shards they wrote included", f"{read / MB:,.1f} MB",
              f"input {tar_bytes / MB:,.1f} MB + output {output / MB:,.1f} MB", None,
              f"{read / (tar_bytes + output):.2f}× input + output")
    _identical(table, f"{label}: Dask output identical to the local run's", local_manifest,
               [manifest for _, manifest, _, _ in runs["dask"]])
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)
    return speedups, one


def _common(inputs: Inputs, downloads: Path, splits: list[str] | None) -> dict[str, Any]:
    """The ``prepare`` arguments every run of a layout shares."""
    common = {"format": "lmdb", "options": OPTIONS, "shard_size": SHARD_SIZE, "download_dir": downloads,
              "splits": splits, "offline": True, "checksums": inputs.checksums, "progress": False}
    if inputs.recipe != "imagenet":
        common["mirror"] = str(inputs.mirror)
    return common


@contextlib.contextmanager
def _cluster(distributed: Any, environ: dict[str, str] | None) -> Iterator[tuple[str, Any]]:
    """A 2-process LocalCluster and its client, its workers started with ``environ`` (None: Dask's default)."""
    import dask

    config = {} if environ is None else {"distributed.nanny.pre-spawn-environ": environ}
    with dask.config.set(config), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                     dashboard_address=None, worker_dashboard_address=None) as cluster, \
            distributed.Client(cluster.scheduler_address) as client:
        client.run(_warm_up)  # imports, so that what is read below is the conversion's
        yield cluster.scheduler_address, client


def _listed(seconds: list[float]) -> str:
    return ", ".join(f"{t:.1f} s" for t in seconds)


def _identical(table: Table, name: str, a: Any, others: list[Any]) -> None:
    """One row: every run in ``others`` wrote what ``a`` did."""
    same = all(shard_hashes(a) == shard_hashes(b) for b in others)
    row = table.add(name, "identical" if same else "DIFFERENT", "shard sha256", None, "—")
    row.target, row.met = "identical", "yes" if same else "no: shard sha256 differ"
    if not same:
        table.failures.append(f"{name}: shard sha256 differ")


def _warm_up() -> None:
    import thresher.conversion.distributed  # noqa: F401 - the import is the point
    import thresher.formats.lmdb_format  # noqa: F401
    import thresher.transforms  # noqa: F401


def _source_bytes_read() -> int:
    from thresher.sources.extent import bytes_read

    return bytes_read()


def _bytes_read() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0
