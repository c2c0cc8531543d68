"""Limits from the published sizes and counts: refused from headers, before the bytes are read."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from e2e import Mirror
from reliability_matrix import scenario
from server import LoopbackServer

import thresher
from thresher.errors import ChecksumError, MalformedDataError, UnsafeArchiveError
from thresher.miniature import FIXED_MTIME, write_checksums
from thresher.recipes import cifar10
from thresher.sources import idx
from thresher.sources.archive import iter_tar

MiB = 1 << 20
HUGE = 3_758_096_383  # the member: 3.5 GiB of zeros, 3.6 MB as gzip


def cifar_with_zero_member(path: Path, mirror: Mirror, name: str, size: int) -> Path:
    """The miniature CIFAR archive with member ``name`` first and ``size`` zero bytes long.

    Written as concatenated gzip members (valid gzip): the zeros are one compressed MiB
    repeated, so even gigabytes of them cost a few MB and milliseconds to write.
    """
    others = {m.name: m.read() for m in iter_tar(mirror.miniatures["cifar10"].files[cifar10.ARCHIVE])
              if m.name != name}
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, FIXED_MTIME
    rest = io.BytesIO()
    with tarfile.open(fileobj=rest, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member, data in others.items():
            entry = tarfile.TarInfo(member)
            entry.size, entry.mode, entry.mtime = len(data), 0o644, FIXED_MTIME
            tar.addfile(entry, io.BytesIO(data))
    full, tail = divmod(size, MiB)
    padding = -size % tarfile.BLOCKSIZE
    zeros = gzip.compress(bytes(MiB), mtime=0)
    with open(path, "wb") as out:
        out.write(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT), mtime=0))
        for _ in range(full):
            out.write(zeros)
        out.write(gzip.compress(bytes(tail + padding), mtime=0))
        out.write(gzip.compress(rest.getvalue(), mtime=0))
    return path


def serve(tmp_path: Path, recipe: str, files: dict[str, Path]) -> tuple[Path, Path]:
    """``files`` laid out as a mirror for ``recipe``, and a --checksums file for them."""
    root = tmp_path / "www"
    (root / recipe).mkdir(parents=True)
    placed = {}
    for filename, source in files.items():
        placed[filename] = root / recipe / filename
        placed[filename].write_bytes(source.read_bytes())
    return root, write_checksums(placed, tmp_path / f"{recipe}.checksums.tsv")


MEASURED_RUN = """
import json, resource, sys
# A guard for the machine: the old reader took gigabytes here; this one must not come near.
resource.setrlimit(resource.RLIMIT_DATA, (1 << 30, 1 << 30))
import thresher
from thresher.acquire import download
from thresher.errors import ThresherError
from thresher.registry import get_recipe
from pathlib import Path
import thresher.conversion.pipeline  # imports read files too: done before counting what prepare reads
args = json.loads(sys.argv[1])
download(get_recipe("cifar10"), Path(args["downloads"]), mirror=args["mirror"], offline=True,
         checksums=Path(args["checksums"]), progress=False)


def bytes_read():  # everything this process passed to read(): the archive, the manifest, any file
    return int(next(l for l in open("/proc/self/io") if l.startswith("rchar")).split()[1])


before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
read_before = bytes_read()
try:
    thresher.prepare("cifar10", root=args["root"], download_dir=args["downloads"], mirror=args["mirror"],
                     offline=True, checksums=args["checksums"], progress=False, splits=["train"])
    outcome = "converted"
except ThresherError as exc:
    outcome = f"{type(exc).__name__}: {exc}"
except MemoryError:
    outcome = "MemoryError"
read = bytes_read() - read_before
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
print(json.dumps({"outcome": outcome, "read": read, "grown": grown}))
"""


@scenario("15", "a CIFAR tar.gz whose member is 3,758,096,383 zero bytes (3.6 MB compressed), with a matching "
                "--checksums line",
          "refused from the member's tar header (over 1.5 × the published 30,730,000-byte batch) before any of "
          "it is inflated: memory flat",
          "in a subprocess: UnsafeArchiveError naming archive, member, size and limit; less than half of the "
          "3.6 MB archive read (one read-ahead chunk); peak RSS grows by less than 64 MiB")
def test_a_huge_cifar_member_is_refused_from_its_header(mirror: Mirror, tmp_path: Path) -> None:
    name = f"{cifar10.FOLDER}/data_batch_1.bin"
    archive = cifar_with_zero_member(tmp_path / cifar10.ARCHIVE, mirror, name, HUGE)
    assert archive.stat().st_size < 8 * MiB
    root, checksums = serve(tmp_path, "cifar10", {cifar10.ARCHIVE: archive})
    with LoopbackServer(root, name="mirror") as srv:
        args = {"downloads": str(tmp_path / "downloads"), "root": str(tmp_path / "out"), "mirror": srv.url,
                "checksums": str(checksums)}
        run = subprocess.run([sys.executable, "-c", MEASURED_RUN, json.dumps(args)], capture_output=True,
                             text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["outcome"].startswith("UnsafeArchiveError: "), result
    assert f"{cifar10.ARCHIVE}: member '{name}': {HUGE} bytes, over the member size limit of 46095000 " \
           "(1.5 × the published sizes)" in result["outcome"]
    assert result["read"] < archive.stat().st_size / 2, result  # inflating the member would read all of it
    assert result["grown"] < 64 * MiB, result
    assert not list((tmp_path / "out").rglob("shard-*"))


@scenario("15", "a CIFAR member that is a whole number of records but larger than the published batch allows",
          "refused from its tar header before any record is converted; no shard under a final name, no manifest",
          "UnsafeArchiveError names the member, its size and the limit; the output holds no shard-* and no "
          "manifest.json")
def test_an_oversized_whole_cifar_batch_fails_before_any_shard(mirror: Mirror, tmp_path: Path) -> None:
    name = f"{cifar10.FOLDER}/data_batch_1.bin"
    size = 16_000 * cifar10.RECORD_BYTES  # 49,168,000: whole records, over 1.5 × 30,730,000
    archive = cifar_with_zero_member(tmp_path / cifar10.ARCHIVE, mirror, name, size)
    root, checksums = serve(tmp_path, "cifar10", {cifar10.ARCHIVE: archive})
    out = tmp_path / "out"
    with LoopbackServer(root, name="mirror") as srv, pytest.raises(
        UnsafeArchiveError, match=rf"member '{name}': {size} bytes, over the member size limit of 46095000"
    ):
        thresher.prepare("cifar10", root=out, mirror=srv.url, offline=True, checksums=checksums,
                         progress=False, shard_size=8 << 20)
    assert not list(out.rglob("shard-*"))
    assert not list(out.rglob("manifest.json"))


def mnist_with_count(tmp_path: Path, mirror: Mirror, count: int) -> dict[str, Path]:
    """MNIST's four files, the train pair with ``count`` images and labels (the test pair as miniature)."""
    directory = tmp_path / "made"
    directory.mkdir()
    files = dict(mirror.miniatures["mnist"].files)
    files["train-images-idx3-ubyte.gz"] = directory / "train-images-idx3-ubyte.gz"
    files["train-labels-idx1-ubyte.gz"] = directory / "train-labels-idx1-ubyte.gz"
    idx.write_idx(files["train-images-idx3-ubyte.gz"], np.zeros((count, 28, 28), np.uint8))
    idx.write_idx(files["train-labels-idx1-ubyte.gz"], np.arange(count, dtype=np.uint8) % 10)
    return files


@scenario("15", "an MNIST pair whose headers agree on 60,100 images where the publisher says 60,000",
          "without --checksums (files accepted with `thresher checksums --update`): an error naming the file "
          "and both counts; with --checksums FILE: converted, the difference a warning in summary and manifest",
          "MalformedDataError names train-images-idx3-ubyte.gz, 60,100 and 60,000, and no shard is written; "
          "with --checksums all 60,100 records are converted and the warning is in summary() and manifest.json")
def test_mnist_counts_that_differ_from_the_published_ones(mirror: Mirror, tmp_path: Path) -> None:
    from thresher.cli import main

    files = mnist_with_count(tmp_path, mirror, 60_100)
    root, checksums = serve(tmp_path, "mnist", files)
    data = tmp_path / "data"
    common = {"root": data, "offline": True, "progress": False, "splits": ["train"]}
    with LoopbackServer(root, name="mirror") as srv:
        with pytest.raises(ChecksumError):  # not the published files
            thresher.prepare("mnist", mirror=srv.url, **common)
        assert main(["checksums", "mnist", "--root", str(data), "--update"]) == 0  # accepted as they are
        with pytest.raises(MalformedDataError, match=r"train-images-idx3-ubyte.gz \(byte 4\): 60,100 images where "
                                                     r"the publisher says 60,000 for train; .*--checksums FILE"):
            thresher.prepare("mnist", mirror=srv.url, **common)
        assert not list(data.rglob("shard-*"))

        result = thresher.prepare("mnist", mirror=srv.url, checksums=checksums, **common)
    assert result.splits["train"].records == 60_100
    warning = ("train-images-idx3-ubyte.gz: 60,100 images where the publisher says 60,000 for train "
               "(--checksums overrides the published files)")
    assert warning in result.splits["train"].warnings
    assert f"Warning: {warning}" in result.summary()
    stored = json.loads((result.directory / "manifest.json").read_text())
    assert warning in stored["splits"]["train"]["warnings"]


@scenario("15", "an MNIST header claiming far more images than published (3,000,000,000)",
          "refused from the 16-byte header, before any pixel is read, even with --checksums",
          "MalformedDataError names the file, the claimed and the published counts and the limit")
def test_an_idx_header_claiming_too_many_images_is_refused_before_reading(mirror: Mirror, tmp_path: Path) -> None:
    files = mnist_with_count(tmp_path, mirror, 5)
    path = files["train-images-idx3-ubyte.gz"]
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:4] + (3_000_000_000).to_bytes(4, "big") + raw[8:], mtime=0))
    root, checksums = serve(tmp_path, "mnist", files)
    with LoopbackServer(root, name="mirror") as srv, pytest.raises(
        MalformedDataError, match=r"train-images-idx3-ubyte.gz \(byte 4\): header says 3,000,000,000 images; "
                                  r"the publisher says 60,000, and more than 90,000"):
        thresher.prepare("mnist", root=tmp_path / "out", mirror=srv.url, offline=True, checksums=checksums,
                         progress=False, splits=["train"])
