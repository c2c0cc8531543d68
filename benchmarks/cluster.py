"""Benchmark: a 2-process Dask cluster against one local worker, on Flowers-style photos in independent inputs.

Each shard task gets the inputs (photos) that hold its records and reads only those, so the
cluster should nearly halve the time of one local worker, and all tasks together should read
about the input once. Bytes read are the workers' ``rchar`` (bytes passed to read/pread, from
/proc/<pid>/io) over the run, imports done beforehand; the output must equal the local run's.
Targets (issue): ≥ 1.7× one local worker; ≤ 1.1× the input read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import thresher
from benchmarks.common import MB, Table, Target, number, rate, shard_hashes, timed
from benchmarks.inputs import Workspace

NAME = "cluster"
OPTIONS = thresher.ConvertOptions(resize=(256, 256), image_encoding="jpeg")
SHARD_SIZE = 2 << 20  # about a hundred resized photos: enough tasks to keep both workers busy
SPEED = Target(1.7, at_least=True)
READ = Target(1.1, at_least=False)


def run(ws: Workspace, quick: bool) -> Table:
    table = Table(NAME, "Dask, 2 worker processes, against one local worker (Flowers-style photos, "
                        "resize 256×256 + JPEG re-encode)")
    try:
        import distributed
    except ImportError:
        table.failures.append("the dask extra is not installed: pip install 'thresher[dask]'")
        return table
    inputs = ws.flowers()
    downloads = ws.downloads(inputs)
    photos = inputs.total_records
    tar_bytes = inputs.files["102flowers.tgz"].stat().st_size
    common = {"format": "lmdb", "options": OPTIONS, "shard_size": SHARD_SIZE, "download_dir": downloads,
              **inputs.fetch_options()}
    local_root = ws.fresh("cluster-local")
    local_seconds, local = timed(lambda: thresher.prepare(inputs.recipe, root=local_root, workers=1, **common))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, worker_dashboard_address=None) as cluster, \
            distributed.Client(cluster.scheduler_address) as client:
        client.run(_warm_up)  # imports, so that rchar below counts the conversion's reads only
        before = client.run(_bytes_read)
        cluster_root = ws.fresh("cluster-dask")
        cluster_seconds, remote = timed(lambda: thresher.prepare(
            inputs.recipe, root=cluster_root, executor="dask", scheduler=cluster.scheduler_address, **common))
        after = client.run(_bytes_read)
    read = sum(after[w] - before[w] for w in after)
    shards = sum(len(s.shards) for s in remote.splits.values())
    table.add(f"one local worker, {photos:,} photos ({tar_bytes / MB:,.0f} MB of JPEG)",
              f"{local_seconds:.1f} s · {rate(photos, local_seconds, 'img')}", "—", None, "—")
    table.add(f"Dask, 2 worker processes, {shards} shard tasks", f"{cluster_seconds:.1f} s · "
              f"{rate(photos, cluster_seconds, 'img')}", f"one local worker: {local_seconds:.1f} s",
              local_seconds / cluster_seconds, f"{number(local_seconds / cluster_seconds)}× speed-up", SPEED)
    table.add("bytes read by all tasks", f"{read / MB:,.1f} MB", f"input: {tar_bytes / MB:,.1f} MB",
              read / tar_bytes, f"{read / tar_bytes:.2f}× the input", READ)
    identical = shard_hashes(local) == shard_hashes(remote)
    row = table.add("output identical to the local run", "identical" if identical else "DIFFERENT",
                    "local manifest", None, "—")
    row.target, row.met = "identical", "yes" if identical else "no: shard sha256 differ"
    if not identical:
        table.failures.append("the cluster's shards differ from the local run's")
    table.notes += [
        f"`prepare('flowers102', format='lmdb', options=ConvertOptions(resize=(256, 256), image_encoding='jpeg'), "
        f"shard_size={SHARD_SIZE >> 20} MiB)` of all three splits, sources already in `download_dir`: `workers=1` "
        f"against `executor='dask'` on a `LocalCluster(n_workers=2, threads_per_worker=1)` started (and its "
        f"workers' imports done) before the timing. Machine: {os.cpu_count()} logical cores.",
        "Bytes read: the sum over both workers of the growth of `rchar` in /proc/<pid>/io during the run "
        "(every read from a file, including the outputs' own page reads); the client's walk of the tar "
        "headers to list the inputs is not a task and is not counted.",
    ]
    for root in (local_root, cluster_root):
        shutil.rmtree(root, ignore_errors=True)
    return table


def _warm_up() -> None:
    import thresher.conversion.distributed  # noqa: F401 - the import is the point
    import thresher.formats.lmdb_format  # noqa: F401
    import thresher.transforms  # noqa: F401


def _bytes_read() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0
