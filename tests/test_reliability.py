"""Conversions that survive kills, races, full disks and bad input, and say exactly what went wrong."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from e2e import Mirror, build_mirror, in_generation, tree_bytes
from reliability_matrix import scenario
from server import LoopbackServer

import thresher
from thresher.errors import (
    DiskSpaceError,
    DownloadError,
    MalformedDataError,
    ManualDownloadRequired,
)
from thresher.miniature import write_checksums
from thresher.transforms import ConvertOptions
from thresher.verify import verify


def prepare_kwargs(mirror: Mirror, mirror_server: LoopbackServer, name: str) -> dict:
    return {"mirror": mirror_server.url, "offline": True, "checksums": str(mirror.checksums[name]), "progress": False}


PAUSING_RUN = """
import os, sys, time
from thresher.registry import get_recipe
import thresher
from thresher.recipe import RecordBatch
recipe = get_recipe({name!r})
original = type(recipe).records
def pieces(item):
    # batches are cut into one-record batches, so a pause can fall between any two records
    return [item.slice(i, i + 1) for i in range(len(item))] if isinstance(item, RecordBatch) else [item]
def pausing(self, split, files):
    index = 0
    for item in original(self, split, files):
        for record in pieces(item):
            if split == {split!r} and index == {pause_at}:
                open({marker!r}, "w").close()
                time.sleep({sleep})
            yield record
            index += 1
    if split == {split!r} and {pause_at} == -1:
        open({marker!r}, "w").close()
        time.sleep({sleep})
type(recipe).records = pausing
result = thresher.prepare({name!r}, root={root!r}, format={fmt!r}, shard_size={shard_size}, **{kwargs!r})
print(result.summary())
"""


def start_pausing_run(tmp_path: Path, root: Path, name: str, fmt: str, split: str, pause_at: int,
                      sleep: float, kwargs: dict, shard_size: int = 2000, tag: str = "") -> tuple[subprocess.Popen, Path]:
    marker = tmp_path / f"paused{tag}-{pause_at}"
    script = PAUSING_RUN.format(name=name, split=split, pause_at=pause_at, marker=str(marker), sleep=sleep,
                                root=str(root), fmt=fmt, shard_size=shard_size, kwargs=kwargs)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return proc, marker


def wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before the pause point: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("pause point not reached")
        time.sleep(0.01)


@scenario("9", "SIGKILL during a conversion, at several points (before the first shard, between shards, "
               "mid-shard, after the last record)",
          "rerun finishes; every shard byte and the manifest equal an uninterrupted run; no half-written "
          "shard under a final name",
          "kill at each pause point, check no final-named shard is incomplete, rerun, compare all bytes")
@pytest.mark.parametrize("fmt", ["lmdb", "minidb", "hdf5"])
def test_killed_conversion_resumes_to_identical_bytes(fmt: str, mirror: Mirror, mirror_server: LoopbackServer,
                                                      tmp_path: Path) -> None:
    kwargs = prepare_kwargs(mirror, mirror_server, "mnist")
    reference = thresher.prepare("mnist", root=tmp_path / "reference", format=fmt, shard_size=2000, **kwargs)
    expected = tree_bytes(reference.directory)
    assert len(reference.splits["train"].shards) >= 3  # so the kill points fall between shards
    root = tmp_path / "killed"
    for pause_at in (0, 3, 5, -1):  # -1: all records yielded, last shard and manifest not yet written
        proc, marker = start_pausing_run(tmp_path, root, "mnist", fmt, "train", pause_at, 600, kwargs)
        wait_for(marker, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for split_dir in (root / "mnist" / fmt).glob("gen-*/train"):
            finished = {s["path"] for s in _progress_shards(split_dir)}
            for shard in split_dir.glob("shard-*"):
                assert f"{split_dir.parent.name}/train/{shard.name}" in finished, \
                    f"{shard} is under its final name but was never finished"
        assert not (root / "mnist" / fmt / "manifest.json").exists()
        # The next kill point continues from this interrupted state: resumes pile up.
    result = thresher.prepare("mnist", root=root, format=fmt, shard_size=2000, **kwargs)
    assert not result.run.already_done
    assert tree_bytes(result.directory) == expected


def _progress_shards(split_dir: Path) -> list[dict]:
    import json

    try:
        return json.loads((split_dir / ".progress.json").read_text())["shards"]
    except FileNotFoundError:
        return []


@scenario("9", "SIGKILL during a download", "the rerun resumes the partial file with Range and the output "
               "equals an uninterrupted run",
          "server stalls mid-body, the process is killed, a .part stays; the rerun sends a Range request "
          "and the shards are byte-identical")
def test_killed_download_resumes_with_range(mirror: Mirror, tmp_path: Path) -> None:
    from server import Stall

    kwargs_root = tmp_path / "files"
    rebuilt = build_mirror(kwargs_root)
    with LoopbackServer(rebuilt.root, name="stalling") as srv:
        path = "/cifar10/cifar-10-binary.tar.gz"
        size = (rebuilt.root / "cifar10" / "cifar-10-binary.tar.gz").stat().st_size
        srv.add_fault(path, Stall(after=size // 2, seconds=600, times=1))
        kwargs = {"mirror": srv.url, "offline": True, "checksums": str(rebuilt.checksums["cifar10"]),
                  "progress": False}
        proc, marker = start_pausing_run(tmp_path, tmp_path / "killed", "cifar10", "lmdb", "train", 0, 0, kwargs)
        part = tmp_path / "killed/cifar10/downloads/cifar-10-binary.tar.gz.part"
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size >= size // 2):
            assert time.monotonic() < deadline and proc.poll() is None, "download never reached the stall"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (tmp_path / "killed/cifar10/downloads/cifar-10-binary.tar.gz").exists()
        before = len(srv.requests)
        result = thresher.prepare("cifar10", root=tmp_path / "killed", format="lmdb", **kwargs)
        resumed = [r for r in srv.requests[before:] if r.path == path and r.method == "GET"]
        assert resumed and resumed[0].range and resumed[0].range.startswith(f"bytes={size // 2}")
        assert srv.bytes_sent(path) < 1.1 * size
    reference = thresher.prepare("cifar10", root=tmp_path / "reference", format="lmdb",
                                 mirror=server_url_for(mirror=rebuilt), offline=True,
                                 checksums=str(rebuilt.checksums["cifar10"]), progress=False)
    assert tree_bytes(result.directory) == tree_bytes(reference.directory)


def server_url_for(mirror: Mirror) -> str:
    """A mirror as a file-system path, which --mirror accepts as well as a URL."""
    return mirror.root.as_uri()


@scenario("10", "two `thresher prepare` of the same dataset started at once",
          "both succeed with one correct output: the second waits for the first and reports the work done",
          "two processes overlap (the first pauses mid-conversion); both exit 0, one says already "
          "prepared, verify passes")
def test_two_prepares_at_once_end_with_one_correct_output(mirror: Mirror, mirror_server: LoopbackServer,
                                                          tmp_path: Path) -> None:
    kwargs = prepare_kwargs(mirror, mirror_server, "mnist")
    first, marker = start_pausing_run(tmp_path, tmp_path, "mnist", "lmdb", "train", 2, 1.5, kwargs, tag="a")
    wait_for(marker, first)
    second, _ = start_pausing_run(tmp_path, tmp_path, "mnist", "lmdb", "train", 10_000, 0, kwargs, tag="b")
    outputs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    assert "prepared in" in outputs[0][0] and "already prepared" in outputs[1][0]
    assert verify(tmp_path / "mnist" / "lmdb").ok


FSIZE_RUN = """
import resource, signal
import thresher
from thresher.errors import DiskSpaceError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
try:
    thresher.prepare({name!r}, root={root!r}, format={fmt!r}, **{kwargs!r})
except DiskSpaceError as exc:
    print("DiskSpaceError:", exc)
    raise SystemExit(3)
"""


@scenario("11", "disk full (file size limit) during a conversion",
          "a DiskSpaceError naming the path and the space; nothing corrupt left under a final name; "
          "the rerun with space completes",
          "RLIMIT_FSIZE in a subprocess for each format; exit with the error text; no manifest; rerun "
          "without the limit verifies")
@pytest.mark.parametrize("fmt", ["lmdb", "minidb", "hdf5"])
def test_disk_full_during_conversion_is_clear_and_leaves_nothing_corrupt(fmt: str, mirror: Mirror,
                                                                         mirror_server: LoopbackServer, tmp_path: Path) -> None:
    kwargs = prepare_kwargs(mirror, mirror_server, "cifar10")
    thresher.acquire.download(thresher.registry.get_recipe("cifar10"), tmp_path / "cifar10" / "downloads",
                              mirror=mirror_server.url, offline=True, checksums=mirror.checksums["cifar10"])
    limit = 20_000  # above the miniature archive, below the converted output
    proc = subprocess.run([sys.executable, "-c", FSIZE_RUN.format(limit=limit, name="cifar10", root=str(tmp_path),
                                                                  fmt=fmt, kwargs=kwargs)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "DiskSpaceError:" in proc.stdout and str(tmp_path / "cifar10" / fmt) in proc.stdout
    assert "full" in proc.stdout or "limit" in proc.stdout
    out = tmp_path / "cifar10" / fmt
    assert not (out / "manifest.json").exists()
    for shard in out.glob("*/shard-*"):
        assert shard.name.startswith("shard-")  # final names only for finished shards:
        assert f"{shard.parent.name}/{shard.name}" in {s["path"] for s in _progress_shards(shard.parent)}
    result = thresher.prepare("cifar10", root=tmp_path, format=fmt, **kwargs)
    assert verify(result.directory).ok


# -- malformed input --------------------------------------------------------------------------------


def broken_copy(mirror: Mirror, tmp_path: Path, name: str, filename: str, data: bytes) -> tuple[Path, Path]:
    """A copy of one recipe's miniature with ``filename`` replaced, and its checksums file."""
    root = tmp_path / "broken"
    target = root / name
    target.mkdir(parents=True)
    files = {}
    for fn, path in mirror.miniatures[name].files.items():
        files[fn] = target / fn
        files[fn].write_bytes(data if fn == filename else path.read_bytes())
    return root, write_checksums(files, tmp_path / f"{name}.broken.tsv")


def idx_payload(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


@scenario("13", "malformed data in a well-formed archive: wrong IDX magic, truncated record file, label out "
                "of range, corrupt JPEG",
          "an error naming the archive member and the offset or record; with --skip-bad the record is "
          "skipped and counted in the manifest and summary",
          "each case raises MalformedDataError with file and place; skip-bad counts and lists them")
@pytest.mark.parametrize(
    ("name", "filename", "damage", "message"),
    [
        ("mnist", "train-images-idx3-ubyte.gz",
         lambda raw: gzip.compress(b"\x00\x00\x08\x01" + raw[4:], mtime=0),
         r"train-images-idx3-ubyte.gz \(byte 0\): IDX magic 0x00000801 is not 0x00000803"),
        ("mnist", "train-images-idx3-ubyte.gz",
         lambda raw: gzip.compress(raw[:-100], mtime=0),
         r"train-images-idx3-ubyte.gz \(byte \d+\): file is truncated: header says 7 items, data ends in item 6"),
        ("mnist", "train-labels-idx1-ubyte.gz",
         lambda raw: gzip.compress(raw[:8] + bytes([12]) + raw[9:], mtime=0),
         r"train-images-idx3-ubyte.gz image 0 \(label\): value 12 is out of range 0..9"),
    ],
    ids=["mnist-magic", "mnist-truncated", "mnist-label-range"],
)
def test_malformed_data_is_named_precisely(name: str, filename: str, damage, message: str, mirror: Mirror,
                                           tmp_path: Path) -> None:
    original = mirror.miniatures[name].files[filename]
    root, checksums = broken_copy(mirror, tmp_path, name, filename, damage(idx_payload(original)))
    with pytest.raises(MalformedDataError, match=message):
        thresher.prepare(name, root=tmp_path / "out", mirror=root.as_uri(), offline=True, checksums=checksums,
                         progress=False)


def test_a_split_that_fails_keeps_the_finished_splits_for_the_rerun(mirror: Mirror, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The last shard of a split is synced and hashed while the next split converts; when that
    next split fails, the finished one is still recorded, and the rerun converts only the rest."""
    from thresher.recipes.mnist import Mnist

    records = Mnist.records

    def failing_test_split(self: Mnist, split: str, files: Any) -> Any:
        if split == "test":
            raise OSError("simulated read error in the test split")
        return records(self, split, files)

    options = {"mirror": mirror.root.as_uri(), "offline": True, "checksums": mirror.checksums["mnist"],
               "progress": False}
    out = tmp_path / "out"
    monkeypatch.setattr(Mnist, "records", failing_test_split)
    with pytest.raises(OSError, match="simulated read error"):
        thresher.prepare("mnist", root=out, **options)
    monkeypatch.setattr(Mnist, "records", records)
    (train,) = (out / "mnist" / "lmdb").glob("gen-*/train")
    (recorded,) = _progress_shards(train)
    shard = out / "mnist" / "lmdb" / recorded["path"]
    assert shard.is_dir() and not list(train.glob(".*.tmp-*"))
    mtime = shard.stat().st_mtime_ns

    result = thresher.prepare("mnist", root=out, **options)
    assert shard.stat().st_mtime_ns == mtime  # kept, not rewritten
    clean = thresher.prepare("mnist", root=tmp_path / "clean", **options)
    assert [f.sha256 for s in result.splits.values() for sh in s.shards for f in sh.files] == \
        [f.sha256 for s in clean.splits.values() for sh in s.shards for f in sh.files]
    assert verify(result.directory).ok


def test_truncated_cifar_batch_names_member_and_offset(mirror: Mirror, tmp_path: Path) -> None:
    from thresher.miniature import write_tar
    from thresher.sources.archive import iter_tar

    archive = mirror.miniatures["cifar10"].files["cifar-10-binary.tar.gz"]
    members = {m.name: m.read() for m in iter_tar(archive)}
    members["cifar-10-batches-bin/data_batch_2.bin"] = members["cifar-10-batches-bin/data_batch_2.bin"][:-10]
    broken = write_tar(tmp_path / "c.tar.gz", members, compression="gz")
    root, checksums = broken_copy(mirror, tmp_path, "cifar10", "cifar-10-binary.tar.gz", broken.read_bytes())
    with pytest.raises(MalformedDataError, match=r"data_batch_2.bin \(byte 6146\): .*record 2 is truncated"):
        thresher.prepare("cifar10", root=tmp_path / "out", mirror=root.as_uri(), offline=True,
                         checksums=checksums, progress=False)


def test_corrupt_jpeg_is_named_and_skip_bad_counts_it(mirror: Mirror, tmp_path: Path) -> None:
    from thresher.miniature import write_tar
    from thresher.sources.archive import iter_tar

    archive = mirror.miniatures["flowers102"].files["102flowers.tgz"]
    members: dict[str, bytes | None] = {m.name: m.read() for m in iter_tar(archive)}
    good = members["jpg/image_00002.jpg"]
    assert good is not None
    members["jpg/image_00002.jpg"] = good[:20] + b"\x00" * 40  # a JPEG header, then garbage
    broken = write_tar(tmp_path / "f.tar", members)
    root, checksums = broken_copy(mirror, tmp_path, "flowers102", "102flowers.tgz", broken.read_bytes())
    common = {"mirror": root.as_uri(), "offline": True, "checksums": checksums, "progress": False,
              "options": ConvertOptions(resize=(16, 16)), "splits": ["train"]}
    with pytest.raises(MalformedDataError, match=r"102flowers.tgz:jpg/image_00002.jpg \(image\): cannot convert"):
        thresher.prepare("flowers102", root=tmp_path / "out", **common)
    result = thresher.prepare("flowers102", root=tmp_path / "skip", skip_bad=True, **common)
    entry = result.splits["train"]
    wanted = len(mirror.miniatures["flowers102"].records["train"])
    assert (entry.records, entry.skipped) == (wanted - 1, 1)
    assert "image_00002.jpg" in entry.skipped_records[0]
    assert "1 skipped" in result.summary()
    assert len(thresher.open(result.directory / "train")) == wanted - 1


# -- corrupted outputs --------------------------------------------------------------------------------


@scenario("14", "corrupted outputs: a flipped byte in a shard, a truncated minidb, a missing shard",
          "`thresher verify` names the file (and record); the reader raises a clear error, never crashes",
          "verify problems name the file; reading a truncated minidb or a missing LMDB raises CorruptShardError "
          "with the path")
def test_verify_and_reader_report_corrupted_outputs(mirror: Mirror, mirror_server: LoopbackServer, tmp_path: Path) -> None:
    from thresher.errors import CorruptShardError

    kwargs = prepare_kwargs(mirror, mirror_server, "mnist")
    lmdb_out = thresher.prepare("mnist", root=tmp_path, format="lmdb", **kwargs).directory
    minidb_out = thresher.prepare("mnist", root=tmp_path, format="minidb", **kwargs).directory
    assert verify(lmdb_out).ok and verify(minidb_out).ok

    data = in_generation(lmdb_out, "train/shard-00000/data.mdb")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    problems = verify(lmdb_out).problems
    assert len(problems) == 1 and str(data) in problems[0] and "sha256" in problems[0]

    shard = in_generation(minidb_out, "test/shard-00000.minidb")
    shard.write_bytes(shard.read_bytes()[:-7])
    problems = verify(minidb_out).problems
    assert any(str(shard) in p for p in problems)
    with pytest.raises(CorruptShardError, match=r"shard-00000.minidb: [\d,]+ bytes, the manifest says [\d,]+.*"
                                                r"thresher verify"):
        thresher.open(minidb_out / "test")[0]

    in_generation(lmdb_out, "test/shard-00000/data.mdb").unlink()
    in_generation(lmdb_out, "test/shard-00000").rmdir()
    problems = verify(lmdb_out).problems
    assert any("test/shard-00000/data.mdb: missing" in p for p in problems)
    with pytest.raises(CorruptShardError, match="test/shard-00000"):
        thresher.open(lmdb_out / "test")[0]


def test_verify_decodes_every_record_and_names_the_bad_one(mirror: Mirror, mirror_server: LoopbackServer,
                                                           tmp_path: Path) -> None:
    """A value that is wrong inside a shard whose hash was re-recorded: only decoding finds it."""
    import hashlib
    import json

    from thresher.formats.minidb import frame

    out = thresher.prepare("mnist", root=tmp_path, format="minidb", **prepare_kwargs(mirror, mirror_server, "mnist")).directory
    shard = in_generation(out, "test/shard-00000.minidb")
    records = shard.read_bytes()
    first_len = int.from_bytes(records[4:8], "little")
    shard.write_bytes(frame(b"00000000", b"\x08\x01garbage") + records[8 + 8 + first_len:])
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["splits"]["test"]["shards"][0]["files"][0]
    entry["bytes"], entry["sha256"] = shard.stat().st_size, hashlib.sha256(shard.read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    problems = verify(out).problems
    assert len(problems) == 1 and "test record 0" in problems[0] and str(shard) in problems[0]


# -- manual download and dead hosts -------------------------------------------------------------------


@scenario("manual", "the host is down (or the recipe needs a manual download)",
          "one screen: what to download, from where, names, sizes, checksums and the exact directory; "
          "files placed there by hand are verified and used",
          "offline without a mirror fails with the instructions; placing the files makes the same call work")
def test_dead_host_gives_instructions_and_hand_placed_files_are_used(mirror: Mirror, tmp_path: Path) -> None:
    downloads = tmp_path / "mnist" / "downloads"
    with pytest.raises(DownloadError) as info:
        thresher.prepare("mnist", root=tmp_path, offline=True, progress=False)
    text = str(info.value)
    assert f"Put these files in {downloads.absolute()}/" in text
    assert "train-images-idx3-ubyte.gz  9,912,422 bytes" in text
    assert "sha256 440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609" in text
    downloads.mkdir(parents=True, exist_ok=True)
    for filename, path in mirror.miniatures["mnist"].files.items():
        (downloads / filename).write_bytes(path.read_bytes())
    result = thresher.prepare("mnist", root=tmp_path, offline=True, checksums=mirror.checksums["mnist"],
                              progress=False)
    assert result.splits["train"].records == len(mirror.miniatures["mnist"].records["train"])


def test_manual_recipe_error_is_one_screen(tmp_path: Path) -> None:
    from thresher.acquire import manual_instructions
    from thresher.registry import get_recipe

    text = manual_instructions(get_recipe("flowers102"), tmp_path / "dl")
    lines = text.splitlines()
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 120
    assert ManualDownloadRequired.__doc__


def test_disk_space_is_checked_before_converting(mirror: Mirror, mirror_server: LoopbackServer, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    from collections import namedtuple

    Usage = namedtuple("Usage", "total used free")
    real = shutil.disk_usage
    thresher.prepare("mnist", root=tmp_path, format="lmdb", **prepare_kwargs(mirror, mirror_server, "mnist"))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(real(p).total, real(p).total, 10))
    with pytest.raises(DiskSpaceError, match=r"needs about .* but only 10 B \(10 bytes\) is free"):
        thresher.prepare("mnist", root=tmp_path, format="minidb", **prepare_kwargs(mirror, mirror_server, "mnist"))
    assert np.all([not p.name.endswith(".minidb") for p in (tmp_path / "mnist").rglob("*")])


@scenario("trust", "an upstream file changed after its checksum was recorded (nothing published)",
          "refused with both hashes and what to do; `thresher checksums NAME --update` is the explicit way to "
          "accept it, after which prepare uses the new file",
          "the changed AN4 archive is refused and kept as .corrupt; `checksums --update` records it; prepare "
          "then converts the new records")
def test_changed_upstream_file_is_refused_until_accepted(mirror: Mirror, tmp_path: Path) -> None:
    from thresher.cli import main
    from thresher.errors import ChecksumError
    from thresher.registry import get_recipe

    upstream = tmp_path / "upstream"
    (upstream / "an4").mkdir(parents=True)
    archive = upstream / "an4" / "an4_raw.bigendian.tar.gz"
    archive.write_bytes(mirror.miniatures["an4"].files["an4_raw.bigendian.tar.gz"].read_bytes())
    with LoopbackServer(upstream, name="upstream") as srv:
        common = {"root": tmp_path / "data", "mirror": srv.url, "offline": True, "progress": False}
        first = thresher.prepare("an4", **common)  # no checksum published: recorded now
        recorded = (tmp_path / "data/an4/downloads/checksums.tsv").read_text()
        assert "an4_raw.bigendian.tar.gz" in recorded

        changed = get_recipe("an4").write_miniature(tmp_path)  # same layout, different bytes
        shorter = {name: path.read_bytes() for name, path in changed.files.items()}
        from thresher.miniature import write_tar
        from thresher.sources.archive import iter_tar

        members = {m.name: m.read() for m in iter_tar(changed.files["an4_raw.bigendian.tar.gz"])}
        members["an4/etc/an4_test.fileids"] = b"\n".join(members["an4/etc/an4_test.fileids"].splitlines()[:2]) + b"\n"
        members["an4/etc/an4_test.transcription"] = (
            b"\n".join(members["an4/etc/an4_test.transcription"].splitlines()[:2]) + b"\n")
        write_tar(archive, members, compression="gz")
        assert archive.read_bytes() != shorter["an4_raw.bigendian.tar.gz"]
        (tmp_path / "data/an4/downloads/an4_raw.bigendian.tar.gz").unlink()  # e.g. a fresh machine
        with pytest.raises(ChecksumError, match=r"thresher checksums an4 --update"):
            thresher.prepare("an4", **common)
        assert main(["checksums", "an4", "--root", str(tmp_path / "data"), "--update"]) == 0
        assert (tmp_path / "data/an4/downloads/checksums.tsv").read_text() != recorded
        second = thresher.prepare("an4", **common)
    assert (first.splits["test"].records, second.splits["test"].records) == (3, 2)


@scenario("13", "a transcript line that does not parse (AN4)",
          "an error naming the archive member and line; with --skip-bad the utterance is skipped and counted",
          "MalformedDataError names `an4/etc/an4_train.transcription line 2`; skip-bad keeps the other utterances")
def test_bad_transcript_line_is_named_and_skippable(mirror: Mirror, tmp_path: Path) -> None:
    from thresher.miniature import write_tar
    from thresher.sources.archive import iter_tar

    archive = mirror.miniatures["an4"].files["an4_raw.bigendian.tar.gz"]
    members = {m.name: m.read() for m in iter_tar(archive)}
    lines = members["an4/etc/an4_train.transcription"].splitlines()
    lines[1] = b"ENTER FOUR FIVE without its markers"
    members["an4/etc/an4_train.transcription"] = b"\n".join(lines) + b"\n"
    broken = write_tar(tmp_path / "a.tar.gz", members, compression="gz")
    root, checksums = broken_copy(mirror, tmp_path, "an4", "an4_raw.bigendian.tar.gz", broken.read_bytes())
    common = {"mirror": root.as_uri(), "offline": True, "checksums": checksums, "progress": False, "splits": ["train"]}
    with pytest.raises(MalformedDataError, match=r"an4/etc/an4_train.transcription line 2\): .* is not '<s> WORDS"):
        thresher.prepare("an4", root=tmp_path / "out", **common)
    result = thresher.prepare("an4", root=tmp_path / "skip", skip_bad=True, **common)
    want = mirror.miniatures["an4"].records["train"]
    assert (result.splits["train"].records, result.splits["train"].skipped) == (len(want) - 1, 1)
    got = thresher.open(result.directory / "train")
    assert [got[i]["transcript"] for i in range(len(got))] == [r["transcript"] for i, r in enumerate(want) if i != 1]


@scenario("manual", "a recipe whose host needs a person (registration, licence)",
          "one screen: what to download, from where, names, sizes, checksums and the exact directory; "
          "files placed there are verified and used",
          "a manual-source recipe raises ManualDownloadRequired with that screen and no network request; "
          "placing the file makes the same call convert")
def test_manual_download_recipe_prints_one_screen_then_uses_placed_files(mirror: Mirror, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from thresher import registry
    from thresher.recipe import Source

    base = registry.get_recipe("cifar10")
    data = mirror.miniatures["cifar10"].files["cifar-10-binary.tar.gz"].read_bytes()
    import hashlib

    class ManualCifar(type(base)):  # the same dataset behind a registration page
        name = "manualcifar"
        manual_instructions = "Register at https://example.org/register, accept the licence, then download:"
        sources = (dataclasses.replace(base.sources[0], urls=("https://example.org/files/cifar-10-binary.tar.gz",),
                                       manual=True, size=len(data), md5=None,
                                       sha256=hashlib.sha256(data).hexdigest()),)

    recipe = ManualCifar()
    assert isinstance(recipe.sources[0], Source) and recipe.needs_manual_download
    monkeypatch.setitem(registry.all_recipes(), "manualcifar", recipe)
    downloads = tmp_path / "manualcifar" / "downloads"
    with pytest.raises(ManualDownloadRequired) as info:
        thresher.prepare("manualcifar", root=tmp_path, progress=False)
    text = str(info.value)
    lines = text.splitlines()
    assert len(lines) <= 24, text
    assert "must be downloaded by hand" in lines[0] and "Register at https://example.org/register" in text
    assert f"Put these files in {downloads.absolute()}/" in text
    assert f"cifar-10-binary.tar.gz  {len(data):,} bytes" in text and hashlib.sha256(data).hexdigest() in text
    assert "from https://example.org/files/cifar-10-binary.tar.gz" in text
    downloads.mkdir(parents=True, exist_ok=True)
    (downloads / "cifar-10-binary.tar.gz").write_bytes(data)
    result = thresher.prepare("manualcifar", root=tmp_path, progress=False)
    assert result.splits["test"].records == len(mirror.miniatures["cifar10"].records["test"])
