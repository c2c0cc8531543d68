"""Shard tasks on a real Dask cluster (2 worker processes on 127.0.0.1) equal a local run byte for byte."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from e2e import Mirror, tree_bytes, write_mnist_mirror
from server import LoopbackServer

import thresher
from thresher.transforms import ConvertOptions

distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
cloudpickle = pytest.importorskip("cloudpickle")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, worker_dashboard_address=None) as local:
        yield local


def common(mirror: Mirror, server: LoopbackServer, name: str) -> dict:
    return {"mirror": server.url, "offline": True, "checksums": mirror.checksums[name], "progress": False}


@pytest.mark.parametrize(("name", "fmt", "options"), [
    ("mnist", "lmdb", None), ("cifar10", "minidb", None), ("cifar10", "hdf5", None),
    ("flowers102", "lmdb", ConvertOptions(resize=(20, 16))), ("an4", "minidb", ConvertOptions(audio_encoding="flac")),
])
def test_cluster_output_equals_local_output(name: str, fmt: str, options: ConvertOptions | None, cluster,
                                            mirror: Mirror, mirror_server: LoopbackServer, tmp_path: Path) -> None:
    kwargs = {**common(mirror, mirror_server, name), "format": fmt, "shard_size": 4000}
    if options is not None:
        kwargs["options"] = options
    local = thresher.prepare(name, root=tmp_path / "local", **kwargs)
    remote = thresher.prepare(name, root=tmp_path / "cluster", executor="dask", scheduler=cluster.scheduler_address,
                              **kwargs)
    assert sum(len(s.shards) for s in remote.splits.values()) > len(remote.splits), "want several shards per split"
    assert remote.dumps() == local.dumps()
    assert tree_bytes(remote.directory) == tree_bytes(local.directory)
    again = thresher.prepare(name, root=tmp_path / "cluster", executor="dask", scheduler=cluster.scheduler_address,
                             **kwargs)
    assert again.run is not None and again.run.already_done


def _commit_every(size: int) -> None:
    """Runs on every worker: LMDB commits this often, so that shards hold many commits."""
    from thresher.formats import lmdb_format

    lmdb_format.COMMIT_BYTES = size


def test_cluster_lmdb_with_many_commits_per_shard_equals_local(cluster, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks start at their shard, a local run at record 0: commit points must not care."""
    from thresher.formats import lmdb_format

    kwargs = {**write_mnist_mirror(tmp_path / "mirror", train=2400, test=600), "format": "lmdb",
              "shard_size": 150_000}
    monkeypatch.setattr(lmdb_format, "COMMIT_BYTES", 24_000)
    local = thresher.prepare("mnist", root=tmp_path / "local", **kwargs)
    assert len(local.splits["train"].shards) >= 4
    with distributed.Client(cluster.scheduler_address) as client:
        client.run(_commit_every, 24_000)
        try:
            remote = thresher.prepare("mnist", root=tmp_path / "cluster", executor="dask",
                                      scheduler=cluster.scheduler_address, **kwargs)
        finally:
            client.run(_commit_every, lmdb_format.COMMIT_BYTES)
    assert tree_bytes(remote.directory) == tree_bytes(local.directory)


def _fail_once_per_shard(marker_dir: str) -> None:
    """Runs on every worker: the first attempt at shard 1 of any split dies after writing half of it."""
    from thresher.conversion import sink as convert

    original = convert.ShardSink.close_shard
    convert.ShardSink.unpatched_close_shard = original

    def flaky(self):  # noqa: ANN001, ANN202
        marker = Path(marker_dir) / f"{self.split_dir.name}-{self.shard}"
        if self.shard == 1 and self.writer is not None:
            try:
                marker.touch(exist_ok=False)
            except FileExistsError:
                pass
            else:
                raise OSError(f"injected failure writing {self.tmp}")
        return original(self)

    convert.ShardSink.close_shard = flaky


def _restore() -> None:
    from thresher.conversion import sink as convert

    convert.ShardSink.close_shard = convert.ShardSink.unpatched_close_shard


def test_a_failed_task_is_retried_and_leaves_no_partial_shard(cluster, mirror: Mirror, mirror_server: LoopbackServer,
                                                             tmp_path: Path) -> None:
    kwargs = {**common(mirror, mirror_server, "mnist"), "format": "minidb", "shard_size": 2000}
    local = thresher.prepare("mnist", root=tmp_path / "local", **kwargs)
    markers = tmp_path / "markers"
    markers.mkdir()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with distributed.Client(cluster.scheduler_address) as client:
        client.run(_fail_once_per_shard, str(markers))
        try:
            remote = thresher.prepare("mnist", root=tmp_path / "cluster", executor="dask",
                                      scheduler=cluster.scheduler_address, **kwargs)
        finally:
            client.run(_restore)  # the workers go on without the injected fault
    assert sorted(p.name for p in markers.iterdir()) == ["test-1", "train-1"]  # each failed once
    assert tree_bytes(remote.directory) == tree_bytes(local.directory)
    assert not [p for p in remote.directory.rglob(".*tmp-*")]


def test_dask_executor_needs_a_scheduler(mirror: Mirror, mirror_server: LoopbackServer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--scheduler"):
        thresher.prepare("mnist", root=tmp_path, executor="dask", **common(mirror, mirror_server, "mnist"))
