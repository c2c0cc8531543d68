"""Failures that used to lose or mix up records silently: a background error, shards that do not
tile their split, commit points that moved with the resume point, a re-prepare under a reader,
and an output edited in place that a rerun trusted."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from e2e import Mirror, in_generation, tree_bytes, write_mnist_mirror
from reliability_matrix import scenario
from server import LoopbackServer

import thresher
from thresher.cli import main
from thresher.errors import CorruptShardError, DatasetReplacedError, DiskSpaceError
from thresher.formats import ShardContext, get_format, hdf5_format, lmdb_format
from thresher.recipe import RecordBatch
from thresher.registry import get_recipe
from thresher.verify import verify


def network(mirror: Mirror, server: LoopbackServer, name: str) -> dict[str, Any]:
    return {"mirror": server.url, "offline": True, "checksums": str(mirror.checksums[name]), "progress": False}


@scenario("11", "a write error in the background thread that syncs and hashes finished shards (a disk filling "
                "up while the next shard is written), then a rerun with space",
          "the run stops with that error; progress lists only the shards before the failed one; the rerun "
          "writes the rest and equals an uninterrupted run",
          "closing shard 2 of train fails on the finishing thread: DiskSpaceError; the progress file lists "
          "exactly shards 0 and 1; no later shard under a final name; the rerun's bytes equal a clean run's "
          "and verify passes")
def test_a_background_failure_stops_the_run_and_keeps_progress_contiguous(
        mirror: Mirror, mirror_server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from thresher.formats.minidb import MinidbWriter

    kwargs = {**network(mirror, mirror_server, "mnist"), "format": "minidb", "shard_size": 2000}
    clean = thresher.prepare("mnist", root=tmp_path / "clean", **kwargs)
    assert len(clean.splits["train"].shards) >= 4
    close = MinidbWriter.close
    failed = threading.Event()

    def full_disk_at_shard_2(self: MinidbWriter) -> None:
        if ".shard-00002." in self.path.name and "/train/" in self.path.as_posix() and not failed.is_set():
            failed.set()
            raise DiskSpaceError(f"{self.path}: the disk is full (injected)")
        close(self)

    monkeypatch.setattr(MinidbWriter, "close", full_disk_at_shard_2)
    root = tmp_path / "full"
    with pytest.raises(DiskSpaceError, match="injected"):
        thresher.prepare("mnist", root=root, **kwargs)
    assert failed.is_set()
    (split_dir,) = (root / "mnist" / "minidb").glob("gen-*/train")
    progress = json.loads((split_dir / ".progress.json").read_text())
    assert [s["path"].split("/")[-1] for s in progress["shards"]] == ["shard-00000.minidb", "shard-00001.minidb"]
    assert sorted(p.name for p in split_dir.glob("shard-*")) == ["shard-00000.minidb", "shard-00001.minidb"]
    monkeypatch.setattr(MinidbWriter, "close", close)
    rerun = thresher.prepare("mnist", root=root, **kwargs)
    assert tree_bytes(rerun.directory) == tree_bytes(clean.directory)
    assert verify(rerun.directory).ok


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path`` (needs root and mount rights; the test skips without them)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@scenario("11", "the disk fills up for real during a multi-shard conversion (a 3 MB tmpfs), then the same "
                "command is rerun after the filesystem grows",
          "a DiskSpaceError; the rerun completes and equals an uninterrupted run byte for byte; verify passes",
          "minidb and hdf5 on a tmpfs too small for the output: DiskSpaceError naming the path; after remount "
          "with room, the rerun's tree equals a run on a roomy disk, and verify decodes every record")
@pytest.mark.parametrize("fmt", ["minidb", "hdf5", "lmdb"])
def test_a_full_disk_then_more_space_resumes_to_the_right_dataset(fmt: str, tmp_path: Path) -> None:
    kwargs = {**write_mnist_mirror(tmp_path / "mirror", train=3000, test=1000), "format": fmt,
              "shard_size": 200_000, "download_dir": tmp_path / "downloads"}
    clean = thresher.prepare("mnist", root=tmp_path / "clean", **kwargs)
    assert len(clean.splits["train"].shards) >= 6
    with small_filesystem(tmp_path / "small", "2m") as root:
        with pytest.raises(DiskSpaceError, match=str(root)):
            thresher.prepare("mnist", root=root, **kwargs)
        subprocess.run(["mount", "-o", "remount,size=256m", str(root)], check=True)
        rerun = thresher.prepare("mnist", root=root, **kwargs)
        assert tree_bytes(rerun.directory) == tree_bytes(clean.directory)
        report = verify(rerun.directory)
        assert report.ok and report.records == 4000, report.problems


@scenario("11", "a progress file that lists shards out of order or with a gap (as a background failure once "
                "left: shards 0..8 and 11)",
          "only the contiguous prefix is trusted; everything after it is written again",
          "a progress file edited to list shards 0, 1 and 3 resumes after shard 1, removes shard 3, and ends "
          "byte-identical to a clean run")
def test_progress_with_a_gap_is_trusted_only_up_to_the_gap(mirror: Mirror, mirror_server: LoopbackServer,
                                                           tmp_path: Path) -> None:
    kwargs = {**network(mirror, mirror_server, "mnist"), "format": "lmdb", "shard_size": 2000}
    clean = thresher.prepare("mnist", root=tmp_path / "clean", **kwargs)
    root = tmp_path / "gap"
    done = thresher.prepare("mnist", root=root, **kwargs)
    manifest = json.loads((done.directory / "manifest.json").read_text())
    shards = manifest["splits"]["train"]["shards"]
    split_dir = done.directory / manifest["generation"] / "train"
    # Undo the finish: as if the run had stopped with these shards recorded and the manifest unwritten.
    progress = {"fingerprint": done.fingerprint, "records_per_shard": manifest["splits"]["train"]["records_per_shard"],
                "shards": [shards[0], shards[1], shards[3]], "notes": [[], [], []]}
    (split_dir / ".progress.json").write_text(json.dumps(progress))
    shutil.rmtree(split_dir / "shard-00002")
    (done.directory / "manifest.json").unlink()
    rerun = thresher.prepare("mnist", root=root, splits=["train"], **kwargs)
    test_only = thresher.prepare("mnist", root=root, **kwargs)
    assert rerun.splits["train"].shards == clean.splits["train"].shards
    assert tree_bytes(test_only.directory) == tree_bytes(clean.directory)


@scenario("14", "a manifest whose shards do not tile their split (a shard listed twice), or a shard file "
                "holding another shard's records whose hash the manifest recorded",
          "`thresher verify` fails naming the shard; the reader refuses it with CorruptShardError instead of "
          "returning records from the wrong place",
          "duplicate entry: verify names it and thresher.open raises; swapped shard directories with swapped "
          "hashes: hashes pass but verify reports the keys, and reading the shard raises")
def test_shards_that_do_not_tile_their_split_are_refused(mirror: Mirror, mirror_server: LoopbackServer,
                                                         tmp_path: Path) -> None:
    kwargs = {**network(mirror, mirror_server, "mnist"), "format": "lmdb", "shard_size": 2000}
    out = thresher.prepare("mnist", root=tmp_path, **kwargs).directory
    original = (out / "manifest.json").read_text()

    manifest = json.loads(original)
    shards = manifest["splits"]["train"]["shards"]
    shards[2] = dict(shards[1])
    (out / "manifest.json").write_text(json.dumps(manifest))
    problems = verify(out).problems
    assert any("shard 2 is recorded as" in p and "shard-00001" in p for p in problems), problems
    with pytest.raises(CorruptShardError, match="inconsistent"):
        thresher.open(out / "train")

    manifest = json.loads(original)
    shards = manifest["splits"]["train"]["shards"]
    one, two = in_generation(out, "train/shard-00001"), in_generation(out, "train/shard-00002")
    one.rename(one.with_name("swap"))
    two.rename(one)
    one.with_name("swap").rename(two)
    shards[1]["files"][0]["sha256"], shards[2]["files"][0]["sha256"] = \
        shards[2]["files"][0]["sha256"], shards[1]["files"][0]["sha256"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    problems = verify(out).problems
    assert problems and not any("sha256" in p for p in problems)
    assert any(str(one) in p and "holds keys 00000004..00000005" in p for p in problems), problems
    ds = thresher.open(out / "train")
    assert ds[1]["label"] is not None  # shard 0 is fine
    with pytest.raises(CorruptShardError, match="holds keys"):
        ds[2]


def _records(count: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    rng = np.random.default_rng(seed)
    keys = [b"%08d" % i for i in range(count)]
    return keys, [rng.bytes(int(n)) for n in rng.integers(200, 3000, count)]


def _write_shard(fmt: str, path: Path, keys: list[bytes], payloads: list[Any], cuts: list[int]) -> bytes:
    storage = get_format(fmt)
    schema = get_recipe("mnist").schema
    writer = storage.writer(path, ShardContext(schema, "GRAY"))
    bounds = [0, *cuts, len(keys)]
    for n, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        if fmt == "hdf5" and n % 2:
            columns = {"image": np.stack([p["image"] for p in payloads[a:b]]),
                       "label": np.asarray([p["label"] for p in payloads[a:b]])}
            writer.append_batch(keys[a:b], RecordBatch(columns))
        elif n % 3 == 2:
            for key, payload in zip(keys[a:b], payloads[a:b], strict=True):
                writer.append(key, payload)
        else:
            writer.append_many(keys[a:b], payloads[a:b])
    writer.key_range = (keys[0].decode(), keys[-1].decode())
    writer.flush()
    writer.close()
    data = path / "data.mdb" if path.is_dir() else path
    return data.read_bytes()


@scenario("9", "records reaching a shard writer in other batches (a resume, another worker count, a Dask "
               "task that starts at its shard), with many LMDB commits and HDF5 blocks per shard",
          "the shard's bytes are the same: commit points and HDF5 writes depend only on the shard's records",
          "the same records written in one call and in random cuts (append, append_many, append_batch) give "
          "identical bytes in lmdb, minidb and hdf5, with commit and block sizes small enough for dozens of each")
@pytest.mark.parametrize("fmt", ["lmdb", "minidb", "hdf5"])
def test_shard_bytes_do_not_depend_on_how_records_arrive(fmt: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lmdb_format, "COMMIT_BYTES", 20_000)
    monkeypatch.setattr(hdf5_format, "BLOCK_BYTES", 40_000)
    keys, payloads = _records(600, seed=1)
    if fmt == "hdf5":
        rng = np.random.default_rng(2)
        payloads = [{"image": rng.integers(0, 256, (28, 28, 1), dtype=np.uint8), "label": int(rng.integers(0, 10))}
                    for _ in keys]
    rng = np.random.default_rng(3)
    reference = _write_shard(fmt, tmp_path / "whole", keys, payloads, [])
    for attempt in range(3):
        cuts = sorted({int(c) for c in rng.integers(1, len(keys), int(rng.integers(5, 60)))})
        assert _write_shard(fmt, tmp_path / f"cut{attempt}", keys, payloads, cuts) == reference, cuts


REPREPARE = """
import sys, thresher
kwargs = {kwargs!r}
for round in range({rounds}):
    for size in {sizes!r}:
        thresher.prepare("mnist", root={root!r}, format="lmdb", shard_size=size, **kwargs)
print("done")
"""


@scenario("10", "`thresher prepare` with another shard size rewrites an output while readers use it (datasets "
                "opened before, and opened again and again during the rewrite)",
          "every record a reader returns is the right one; a reader whose shards were replaced gets "
          "DatasetReplacedError saying to open it again; never a mix of old and new shards",
          "a subprocess re-prepares MNIST (1,200 records) alternating two shard sizes while this process opens "
          "and reads random records: each equals the record at that index or raises DatasetReplacedError; "
          "a dataset opened before keeps returning right records from shards it had open")
def test_a_reprepare_under_readers_never_returns_wrong_records(tmp_path: Path) -> None:
    kwargs = write_mnist_mirror(tmp_path / "mirror", train=1000, test=200)
    root = tmp_path / "data"
    thresher.prepare("mnist", root=root, format="lmdb", shard_size=60_000, **kwargs)
    split = root / "mnist" / "lmdb" / "train"
    first = thresher.open(split)
    expected = [r["image"].tobytes() for r in first]
    first.close()
    held = thresher.open(split)
    assert [held[i]["image"].tobytes() for i in range(0, 1000, 7)] == expected[0:1000:7]  # every shard open
    untouched = thresher.open(split)

    script = REPREPARE.format(kwargs=kwargs, rounds=3, sizes=[60_000, 25_000], root=str(root))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rng = np.random.default_rng(0)
    reads = replaced = 0
    while proc.poll() is None or reads == 0:
        ds = thresher.open(split)
        try:
            for index in rng.integers(0, 1000, 20):
                assert ds[int(index)]["image"].tobytes() == expected[index], f"wrong record at {index}"
                reads += 1
        except DatasetReplacedError:
            replaced += 1
        finally:
            ds.close()
    out, err = proc.communicate()
    assert proc.returncode == 0 and "done" in out, err
    assert reads > 100
    assert [held[i]["image"].tobytes() for i in range(1000)] == expected
    held.close()  # in one process, LMDB shards are shared: the old files stay open while anyone holds them
    with pytest.raises(DatasetReplacedError, match="open it again"):
        untouched[5]
    fresh = thresher.open(split)
    assert [r["image"].tobytes() for r in fresh] == expected
    assert len(list((root / "mnist" / "lmdb").glob("gen-*"))) == 1


@scenario("14", "a shard edited in place (same size, one byte flipped), then `thresher prepare` again",
          "the rerun does not answer 'already prepared': a file changed since it was written is re-hashed, "
          "and `--verify` re-hashes every file; the damaged shard and those after it are written again",
          "after a flipped byte prepare is not already_done and the tree equals a clean run's; with the file's "
          "time put back, the cheap check passes and `prepare --verify` still repairs it")
def test_prepare_does_not_trust_a_shard_changed_in_place(mirror: Mirror, mirror_server: LoopbackServer,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    kwargs = {**network(mirror, mirror_server, "mnist"), "format": "minidb", "shard_size": 2000}
    out = thresher.prepare("mnist", root=tmp_path, **kwargs).directory
    clean = tree_bytes(out)
    shard = in_generation(out, "train/shard-00001.minidb")
    first = in_generation(out, "train/shard-00000.minidb")
    first_written = first.stat().st_mtime_ns

    def flip() -> os.stat_result:
        stat = shard.stat()
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0x01
        shard.write_bytes(bytes(data))
        return stat

    flip()
    again = thresher.prepare("mnist", root=tmp_path, **kwargs)
    assert not again.run.already_done
    assert tree_bytes(out) == clean
    assert first.stat().st_mtime_ns == first_written  # the good shard before it was kept

    stat = flip()
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # damage that leaves no trace in the file's times
    assert thresher.prepare("mnist", root=tmp_path, **kwargs).run.already_done
    assert main(["prepare", "mnist", "--root", str(tmp_path), "--format", "minidb", "--shard-size", "2000",
                 "--mirror", kwargs["mirror"], "--offline", "--checksums", kwargs["checksums"], "--no-progress",
                 "--verify"]) == 0
    assert "already prepared" not in capsys.readouterr().out
    assert tree_bytes(out) == clean


def test_an_output_of_the_old_layout_is_replaced_by_a_generation(mirror: Mirror, mirror_server: LoopbackServer,
                                                                 tmp_path: Path) -> None:
    """Shards written straight into <format>/<split> by an earlier version, with a version-1 manifest."""
    kwargs = {**network(mirror, mirror_server, "mnist"), "format": "minidb"}
    out = tmp_path / "mnist" / "minidb"
    (out / "train").mkdir(parents=True)
    (out / "train" / "shard-00000.minidb").write_bytes(b"old")
    (out / "manifest.json").write_text(json.dumps({"thresher_manifest": 1, "splits": {}}))
    result = thresher.prepare("mnist", root=tmp_path, **kwargs)
    assert (out / "train").is_symlink() and os.readlink(out / "train") == f"{result.generation}/train"
    assert verify(out).ok
    with pytest.raises(CorruptShardError, match="prepare the dataset again"):
        (out / "manifest.json").write_text(json.dumps({"thresher_manifest": 1, "created_by": "thresher 0.0.9"}))
        thresher.open(out / "train")


def test_a_manifest_a_killed_run_was_writing_is_removed_by_the_next_run(tmp_path: Path) -> None:
    """A kill while the manifest (or the stamps) is being written leaves a temporary beside it;
    the next run, prepared already or not, removes it under the lock."""
    kwargs = write_mnist_mirror(tmp_path / "mirror", train=30, test=10)
    done = thresher.prepare("mnist", root=tmp_path / "out", **kwargs)
    for leftover in (".manifest.json.tmp-99999-1", ".stamps.json.tmp-99999-1"):
        (done.directory / leftover).write_bytes(b"{half a manif")
    cli = subprocess.run([sys.executable, "-m", "thresher.cli", "prepare", "mnist", "--root", str(tmp_path / "out"),
                          "--mirror", kwargs["mirror"], "--offline", "--checksums", kwargs["checksums"]],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and "already prepared" in cli.stdout, cli.stderr
    assert not list(done.directory.glob(".*.tmp-*"))
    (done.directory / ".manifest.json.tmp-99999-2").write_bytes(b"{half")
    thresher.prepare("mnist", root=tmp_path / "out", shard_size=4000, **kwargs)  # other options: converts
    assert not list(done.directory.glob(".*.tmp-*"))
