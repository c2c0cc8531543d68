"""`thresher prepare` on an output that is already there: what it imports, and that it still checks everything.

A batch job meets this case most; it must not pay for importing the converter (codecs, storage
libraries, worker pools, Dask, the downloader's HTTP stack). The budget is a list of modules, not
a time, so the test means the same on any machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from e2e import tree_bytes, write_mnist_mirror

# The converter and what only a conversion or a download needs.
CONVERTER = ("thresher.conversion.pipeline", "thresher.conversion.convert", "thresher.conversion.distributed",
             "thresher.conversion.executors", "thresher.conversion.workers", "thresher.conversion.sink",
             "thresher.codecs", "thresher.formats.lmdb_format", "thresher.formats.minidb",
             "thresher.formats.hdf5_format", "thresher.fetch.transfer", "thresher.reader")
# What a call imported that it must not: the packages outside the standard library, the converter modules and
# the other recipes' modules (what the interpreter loaded before it, such as site's path hooks, does not count).
IMPORTED = f"""
new = set(sys.modules) - before
outside = {{m.split(".")[0] for m in new}} - set(sys.stdlib_module_names) - {{"thresher"}}
converter = {{m for m in new if m.startswith({CONVERTER!r})}}
other_recipes = {{m for m in new if m.startswith("thresher.recipes.") and m != "thresher.recipes." + sys.argv[2]}}
print("IMPORTED", status, " ".join(sorted(outside | converter | other_recipes)))
"""
# A call of the CLI: its arguments are the probe's.
PROBE = """
import sys
before = set(sys.modules)
from thresher.cli import main
status = main(sys.argv[1:])
""" + IMPORTED
# The same call through the Python API, as a script or a notebook makes it: its arguments as JSON.
API_PROBE = """
import json, sys
before = set(sys.modules)
import thresher
kwargs = json.loads(sys.argv[1])
manifest = thresher.prepare(sys.argv[2], **kwargs)
print(manifest.summary())
status = 0 if manifest.run.already_done else 1
""" + IMPORTED


def thresher(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thresher.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def prepared(tmp_path: Path) -> tuple[list[str], Path]:
    """A prepared MNIST miniature: the CLI arguments that prepared it, and its format directory."""
    source: dict[str, Any] = write_mnist_mirror(tmp_path / "mirror", train=300, test=100)
    args = ["prepare", "mnist", "--root", str(tmp_path / "root"), "--mirror", source["mirror"], "--offline",
            "--checksums", source["checksums"], "--no-progress", "--shard-size", "64K"]
    proc = thresher(*args)
    assert proc.returncode == 0, proc.stderr
    assert " prepared in " in proc.stdout
    return args, tmp_path / "root" / "mnist" / "lmdb"


def shard_file(out: Path, split: str) -> Path:
    manifest = json.loads((out / "manifest.json").read_text())
    return out / manifest["splits"][split]["shards"][0]["files"][0]["path"]


@pytest.mark.parametrize("verify", [False, True], ids=["stamps", "verify"])
def test_prepare_of_a_prepared_output_imports_no_converter(prepared: tuple[list[str], Path], verify: bool) -> None:
    args, _ = prepared
    proc = subprocess.run([sys.executable, "-c", PROBE, *args, *(["--verify"] if verify else [])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "already prepared, nothing to do" in proc.stdout, proc.stdout
    imported = next(line for line in proc.stdout.splitlines() if line.startswith("IMPORTED"))
    assert imported == "IMPORTED 0 ", f"a no-op prepare imported: {imported.split(maxsplit=2)[2:]}"


def test_the_python_api_takes_the_same_fast_path(prepared: tuple[list[str], Path]) -> None:
    """``thresher.prepare`` on a prepared output decides from manifest and stamps, as the CLI does."""
    args, out = prepared
    kwargs = {"root": args[args.index("--root") + 1], "mirror": args[args.index("--mirror") + 1], "offline": True,
              "checksums": args[args.index("--checksums") + 1], "progress": False, "shard_size": 64 << 10}
    proc = subprocess.run([sys.executable, "-c", API_PROBE, json.dumps(kwargs), "mnist"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "already prepared, nothing to do" in proc.stdout, proc.stdout
    imported = next(line for line in proc.stdout.splitlines() if line.startswith("IMPORTED"))
    assert imported == "IMPORTED 0 ", f"a no-op thresher.prepare imported: {imported.split(maxsplit=2)[2:]}"
    assert (out / "train").is_symlink()


def test_a_no_op_prepare_relinks_splits_and_prints_the_same_summary(prepared: tuple[list[str], Path]) -> None:
    args, out = prepared
    first = thresher(*args)
    (out / "train").unlink()
    again = thresher(*args)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout and "already prepared, nothing to do" in again.stdout
    assert (out / "train").is_symlink() and os.readlink(out / "train") == os.readlink(out / "test")[:-4] + "train"


def test_a_no_op_prepare_still_finds_damaged_shards(prepared: tuple[list[str], Path]) -> None:
    args, out = prepared
    good = tree_bytes(out)
    shard = shard_file(out, "train")
    stat = shard.stat()
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # same size and time: only a hash sees it
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "nothing to do" in thresher(*args).stdout  # sizes and times are what a plain rerun trusts
    proc = thresher(*args, "--verify")
    assert proc.returncode == 0, proc.stderr
    assert " prepared in " in proc.stdout and "no longer match the manifest" in proc.stderr
    assert tree_bytes(out) == good

    shard.write_bytes(shard.read_bytes() + b"\0")  # another size: a plain rerun sees it
    proc = thresher(*args)
    assert " prepared in " in proc.stdout, proc.stdout
    assert tree_bytes(out) == good


def test_other_options_or_a_changed_source_are_not_taken_for_done(prepared: tuple[list[str], Path],
                                                                tmp_path: Path) -> None:
    args, out = prepared
    proc = thresher(*args, "--codec", "tensorprotos")
    assert proc.returncode == 0 and " prepared in " in proc.stdout, proc.stderr
    checksums = Path(args[args.index("--checksums") + 1])
    header, first, *rest = checksums.read_text().splitlines()
    name, size, _ = first.split("\t")
    checksums.write_text("\n".join([header, f"{name}\t{size}\t{'0' * 64}", *rest]) + "\n")
    proc = thresher(*args)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert name in proc.stderr and "nothing to do" not in proc.stdout


def test_the_format_table_says_what_each_format_class_says() -> None:
    """``uses_codec`` answers without importing a format; it must agree with the class it stands for."""
    from thresher.formats import FORMATS, get_format, uses_codec

    assert FORMATS == ("lmdb", "minidb", "hdf5")
    for name in FORMATS:
        storage = get_format(name)
        assert (storage.name, storage.uses_codec) == (name, uses_codec(name))
    with pytest.raises(ValueError, match="unknown format 'tar'; choose one of lmdb, minidb, hdf5"):
        uses_codec("tar")
